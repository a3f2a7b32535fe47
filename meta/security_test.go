package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
)

// countingNets counts the NAD lookups that reach the store.
type countingNets struct {
	*dirNetworks
	gets int
}

func (c *countingNets) NAD(ctx context.Context, ns, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	c.gets++
	return c.dirNetworks.NAD(ctx, ns, name)
}

func nadManifest(ns, name, config string, annotations map[string]string) string {
	nad := nadv1.NetworkAttachmentDefinition{}
	nad.APIVersion, nad.Kind = "k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"
	nad.Namespace, nad.Name, nad.Annotations = ns, name, annotations
	nad.Spec.Config = config
	b, _ := json.Marshal(nad)
	return string(b)
}

// The attack: a NAD whose conf is a nested meta-plugin, with binDir /bin and a
// delegate of type sh. Every way a delegate conf reaches the plan (the networks annotation,
// the default-network annotation, defaultNetworks, static delegates, a later plugin of a
// conflist, a NAD resolving to a conf file) refuses our own types and Multus's by name.
func TestSecurityOwnTypesNeverDelegates(t *testing.T) {
	nested := func(typ string) string {
		return `{"cniVersion":"1.0.0","name":"evil","type":"` + typ + `","binDir":"/bin","clusterNetwork":"/etc/cni/net.d",
		  "delegates":[{"cniVersion":"1.0.0","name":"x","type":"sh","cmd":"$(id|tee /tmp/x)"}]}`
	}
	for _, typ := range []string{"multinet", "multinet-shim", "multinetd", "multus", "multus-shim"} {
		t.Run(typ, func(t *testing.T) {
			nads := map[string]string{
				"evil":  nadManifest("default", "evil", nested(typ), nil),
				"chain": nadManifest("default", "chain", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"bridge"},{"type":"`+typ+`","binDir":"/bin"}]}`, nil),
				"sys":   nadManifest("kube-system", "evil-default", nested(typ), nil),
				"ipam":  nadManifest("default", "ipam", `{"cniVersion":"1.0.0","name":"ipam","type":"macvlan","ipam":{"type":"`+typ+`","binDir":"/bin"}}`, nil),
			}
			conf, nets := standalone(t, nads)
			pl := &planner{conf: conf, nets: nets}
			for _, c := range []struct {
				what string
				pod  *corev1.Pod
				want string
			}{
				{"networks annotation", podWith("evil"), "NAD default/evil"},
				{"later plugin of a conflist", podWith("chain"), "NAD default/chain"},
				{"IPAM of a plugin", podWith("ipam"), "NAD default/ipam"},
				{"default-network annotation", &corev1.Pod{ObjectMeta: podWith("").ObjectMeta}, "NAD default/evil"},
			} {
				if c.what == "default-network annotation" {
					c.pod.Annotations = map[string]string{DefaultNetworkAnnot: "default/evil"}
				}
				_, err := pl.plan(context.Background(), c.pod, "uid-1", "eth0")
				if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `plugin type "`+typ+`" refused`) {
					t.Errorf("%s: err = %v, want refused naming %s and type %s", c.what, err, c.want, typ)
				}
			}
			dconf := *conf
			dconf.DefaultNetworks = []string{"kube-system/evil-default"}
			_, err := (&planner{conf: &dconf, nets: nets}).plan(context.Background(), podWith(""), "uid-1", "eth0")
			if err == nil || !strings.Contains(err.Error(), "NAD kube-system/evil-default") || !strings.Contains(err.Error(), "refused") {
				t.Errorf("defaultNetworks: err = %v", err)
			}
			sconf, err := LoadConfig([]byte(`{"name":"m","type":"multinet","delegates":[{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","masterplugin":true},` + nested(typ) + `]}`))
			if err != nil {
				t.Fatal(err)
			}
			_, err = (&planner{conf: sconf}).plan(context.Background(), podWith(""), "uid-1", "eth0")
			if err == nil || !strings.Contains(err.Error(), `static delegate "evil"`) || !strings.Contains(err.Error(), "refused") {
				t.Errorf("static delegates: err = %v", err)
			}
			mconf, _ := LoadConfig([]byte(`{"name":"m","type":"multinet","delegates":[` + nested(typ) + `]}`))
			_, err = (&planner{conf: mconf}).plan(context.Background(), podWith(""), "uid-1", "eth0")
			if err == nil || !strings.Contains(err.Error(), "cluster network") || !strings.Contains(err.Error(), "refused") {
				t.Errorf("static master delegate: err = %v", err)
			}
		})
	}
}

// Wall 1 of the self-recursion: a NAD with an empty spec named like our generated conflist
// resolves to that conf in confDir; it is refused, naming the NAD and the conf, instead of
// making every ADD exec multinet again.
func TestSecurityNADResolvingToOwnConfRefused(t *testing.T) {
	confDir := t.TempDir()
	os.WriteFile(filepath.Join(confDir, "10-bridge.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	if _, _, err := Generate(GenerateOptions{ConfDir: confDir}); err != nil {
		t.Fatal(err)
	}
	// The generated conf points the plugin at the conf dir it is in: that is where an empty
	// spec.config is resolved.
	b, _ := os.ReadFile(filepath.Join(confDir, OwnConfName))
	var own struct {
		Plugins []struct {
			ConfDir string `json:"confDir"`
		} `json:"plugins"`
	}
	if json.Unmarshal(b, &own); len(own.Plugins) != 1 || own.Plugins[0].ConfDir != confDir {
		t.Fatalf("generated conf's confDir = %+v, want %s", own, confDir)
	}
	// A copy under another file name is recognised by its plugin type.
	os.WriteFile(filepath.Join(confDir, "50-copy.conflist"), []byte(strings.Replace(string(b), "multinet-cni-network", "copy-net", 1)), 0o644)
	nads := map[string]string{
		"own":  nadManifest("default", "multinet-cni-network", "", nil),
		"copy": nadManifest("default", "copy-net", "", nil),
		"ok":   nadManifest("default", "cbr0", "", nil),
	}
	conf, nets := standalone(t, nads)
	conf.ConfDir = confDir
	for _, c := range []struct{ ann, want string }{
		{"multinet-cni-network", `NAD default/multinet-cni-network: no spec.config, and the conf named "multinet-cni-network" in ` + confDir + ` is multinet's own (00-multinet.conflist): refused`},
		{"copy-net", `NAD default/copy-net: no spec.config, and the conf named "copy-net" in ` + confDir + ` is multinet's own (50-copy.conflist)`},
	} {
		for _, annot := range []string{NetworksAnnot, DefaultNetworkAnnot} {
			pod := podWith("")
			pod.Annotations = map[string]string{annot: "default/" + c.ann}
			_, err := (&planner{conf: conf, nets: nets}).plan(context.Background(), pod, "uid-1", "eth0")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %s: err = %v\nwant %s", annot, c.ann, err, c.want)
			}
		}
	}
	// An empty spec naming a foreign conf still works, as with Multus.
	ds, err := (&planner{conf: conf, nets: nets}).plan(context.Background(), podWith("cbr0"), "uid-1", "eth0")
	if err != nil || len(ds) != 2 || ds[1].Name != "default/cbr0" {
		t.Fatalf("empty spec naming cbr0: %v, %v", ds, err)
	}
}

// Wall 2 of the self-recursion, alone: a meta-plugin that finds MULTINET_DEPTH set (it was
// started as a delegate, whatever name it was installed under) attaches nothing; its DEL does
// nothing and succeeds, so the outer DEL is never blocked by it.
func TestSecurityDepthGuardRefusesNestedRun(t *testing.T) {
	conf, _ := standalone(t, map[string]string{"n": nadManifest("default", "plain", `{"cniVersion":"1.0.0","type":"bridge"}`, nil)})
	stdin, _ := json.Marshal(map[string]interface{}{"cniVersion": "1.0.0", "name": "m", "type": "multinet",
		"clusterNetwork": conf.ClusterNetwork, "networkDir": conf.NetworkDir, "cacheDir": t.TempDir()})
	p, err := New(stdin, "", Env{Depth: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net", Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnf-1", StdinData: stdin}
	if _, err := p.Add(args); err == nil || !strings.Contains(err.Error(), "ADD refused: started as a delegate of multinet (MULTINET_DEPTH=1)") {
		t.Errorf("nested ADD: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(p.Conf.CacheDir, "delegates", "c1.json")); !os.IsNotExist(err) {
		t.Errorf("nested ADD recorded delegates: %v", err)
	}
	for verb, f := range map[string]func(*skel.CmdArgs) error{"CHECK": p.Check, "STATUS": p.Status} {
		if err := f(args); err == nil || !strings.Contains(err.Error(), verb+" refused") {
			t.Errorf("nested %s: err = %v", verb, err)
		}
	}
	if err := p.Del(args); err != nil {
		t.Errorf("nested DEL: %v, want success doing nothing", err)
	}
	// The marker each delegate gets is one more than ours.
	var got []string
	rec := recordExec{env: &got}
	outer := &Plugin{Conf: conf, Depth: 0, Exec: rec}
	outer.exec().ExecPlugin(context.Background(), "/nonexistent", nil, []string{"PATH=/bin", EnvDepth + "=7"})
	if strings.Join(got, " ") != "PATH=/bin "+EnvDepth+"=1" {
		t.Errorf("delegate environment = %v, want PATH and %s=1 only", got, EnvDepth)
	}
}

// recordExec keeps the environment a delegate would get.
type recordExec struct {
	invoke.Exec
	env *[]string
}

func (r recordExec) ExecPlugin(_ context.Context, _ string, _ []byte, environ []string) ([]byte, error) {
	*r.env = environ
	return nil, fmt.Errorf("not run")
}

// The 80 KB annotation naming one NAD 40,001 times: before, 40,001 delegates and 40,000
// NAD GETs per ADD (and again on every kubelet retry). Now it is refused before any lookup, by
// its size, and by the attachment count when the size limit is raised; a pod naming one NAD
// three times costs one lookup.
func TestSecurityAnnotationLimits(t *testing.T) {
	conf, dn := standalone(t, map[string]string{"n": nadManifest("default", "net", `{"cniVersion":"1.0.0","type":"bridge"}`, nil)})
	huge := strings.TrimSuffix(strings.Repeat("net,", 40001), ",")
	if len(huge) < 80000 {
		t.Fatalf("annotation is %d bytes", len(huge))
	}
	nets := &countingNets{dirNetworks: dn}
	_, err := (&planner{conf: conf, nets: nets}).plan(context.Background(), podWith(huge), "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("annotation %s is %d bytes; at most 65536 (maxAnnotationBytes)", NetworksAnnot, len(huge))) {
		t.Errorf("40,001-element annotation: err = %v", err)
	}
	if nets.gets != 0 {
		t.Errorf("%d NAD lookups for a refused annotation", nets.gets)
	}
	big := *conf
	big.MaxAnnotationBytes = 1 << 20
	_, err = (&planner{conf: &big, nets: nets}).plan(context.Background(), podWith(huge), "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "40001 attachments asked for") || !strings.Contains(err.Error(), "at most 32 (maxAttachments)") {
		t.Errorf("40,001 attachments under a raised size limit: err = %v", err)
	}
	if nets.gets != 0 {
		t.Errorf("%d NAD lookups for refused attachments", nets.gets)
	}
	// The limit counts defaultNetworks too, and is the operator's to set.
	small := *conf
	small.MaxAttachments = 3
	small.DefaultNetworks = []string{"default/net"}
	_, err = (&planner{conf: &small, nets: nets}).plan(context.Background(), podWith("net,net,net"), "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "4 attachments asked for (3 by annotation "+NetworksAnnot+", 1 defaultNetworks, 0 static delegates); at most 3") {
		t.Errorf("4 attachments with maxAttachments 3: err = %v", err)
	}
	nets.gets = 0
	ds, err := (&planner{conf: conf, nets: nets}).plan(context.Background(), podWith("net,net,net"), "uid-1", "eth0")
	if err != nil || len(ds) != 4 {
		t.Fatalf("three attachments of one NAD: %v, %v", len(ds), err)
	}
	if nets.gets != 1 {
		t.Errorf("%d NAD lookups for one NAD named three times, want 1", nets.gets)
	}
	for _, c := range []string{`{"name":"m","type":"multinet","clusterNetwork":"x","maxAttachments":-1}`, `{"name":"m","type":"multinet","clusterNetwork":"x","logDir":"rel"}`} {
		if _, err := LoadConfig([]byte(c)); err == nil {
			t.Errorf("LoadConfig(%s) accepted", c)
		}
	}
}

// nilPodNets answers a pod lookup with neither a pod nor an error (a buggy API seam).
type nilPodNets struct{ *dirNetworks }

func (nilPodNets) Pod(context.Context, string, string) (*corev1.Pod, error) { return nil, nil }

func (n nilPodNets) NAD(ctx context.Context, ns, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	return n.dirNetworks.NAD(ctx, ns, name)
}

// Inputs that used to panic: a NAD whose spec.config is the JSON null (inside the NAD
// client's GetCNIConfig), defaultNetworks with neither an API nor a networkDir. Each is now an
// error naming the NAD or pod; and a panic anywhere below a verb comes back as a CNI error
// naming the pod instead of killing the plugin.
func TestSecurityNoInputPanics(t *testing.T) {
	conf, nets := standalone(t, map[string]string{
		"sriov": sriovNAD,
		"null":  nadManifest("default", "null-net", "null", nil),
		"array": nadManifest("default", "array-net", "[]", nil),
		"str":   nadManifest("default", "str-net", `"x"`, nil),
	})
	for name, want := range map[string]string{
		"null-net":  "NAD default/null-net: spec.config is null",
		"array-net": "NAD default/array-net: spec.config",
		"str-net":   "NAD default/str-net: spec.config",
	} {
		_, err := (&planner{conf: conf, nets: nets}).plan(context.Background(), podWith(name), "uid-1", "eth0")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", name, err, want)
		}
	}
	noAPI, err := LoadConfig([]byte(`{"name":"m","type":"multinet","clusterNetwork":"` + conf.ClusterNetwork + `","defaultNetworks":["extra"]}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&planner{conf: noAPI}).plan(context.Background(), podWith(""), "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "network kube-system/extra: no NAD source configured") {
		t.Errorf("defaultNetworks without API or networkDir: err = %v", err)
	}
	log, _ := newLogger(conf)
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net", Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnf-1"}
	p := &Plugin{Conf: conf, Nets: nilPodNets{nets}, Log: log}
	if _, err = p.Add(args); err == nil || !strings.Contains(err.Error(), "get pod default/cnf-1: no pod and no error") {
		t.Errorf("ADD with a pod lookup answering nothing: err = %v", err)
	}
	// A device lookup that panics (a bug in a seam) is recovered, naming the pod.
	args.Args += ";MULTINET_NETWORKS=sriov-net"
	p = &Plugin{Conf: conf, Nets: nets, Log: log, Devices: func(context.Context, string, string, string, string) ([]string, error) {
		var m map[string]int
		m["boom"]++
		return nil, nil
	}}
	nets.args = parseCNIArgs(args.Args)
	_, err = p.Add(args)
	if err == nil || !strings.Contains(err.Error(), "pod default/cnf-1 (container c1): multinet ADD: internal error: assignment to entry in nil map") {
		t.Errorf("ADD with a panic below it: err = %v", err)
	}
	// Without a logger too (a plugin built in-process with only a Conf).
	p.Log = nil
	if _, err = p.Add(args); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("ADD without a logger: err = %v", err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// logFile came from the netconf and was opened as root with O_CREATE, following symlinks, on
// every ADD and DEL: "/etc/nologin" locked out logins. Now it is only ever a file under logDir:
// one outside is ignored (logs go to stderr, which the runtime keeps, with the reason), a
// symlink there is not followed, and the file is 0600. New's file is closed by Close, not
// leaked once per call.
func TestSecurityLogFileOnlyUnderLogDir(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	victim := filepath.Join(dir, "etc", "nologin")
	os.MkdirAll(filepath.Dir(victim), 0o755)
	conf := func(logFile string) []byte {
		b, _ := json.Marshal(map[string]interface{}{"cniVersion": "1.0.0", "name": "m", "type": "multinet",
			"clusterNetwork": "cbr0", "logDir": logDir, "logFile": logFile, "logLevel": "debug"})
		return b
	}
	for _, lf := range []string{victim, logDir + "/../etc/nologin", "../etc/nologin"} {
		p, err := New(conf(lf), "", Env{})
		if err != nil {
			t.Fatalf("logFile %s: %v (a log setting must not fail the plugin)", lf, err)
		}
		p.Log.Info("hello")
		p.Close()
		if _, err := os.Stat(victim); !os.IsNotExist(err) {
			t.Fatalf("logFile %s outside logDir was created", lf)
		}
	}
	os.MkdirAll(logDir, 0o700)
	os.Symlink(victim, filepath.Join(logDir, "linked.log"))
	p, err := New(conf("linked.log"), "", Env{})
	if err != nil {
		t.Fatal(err)
	}
	p.Log.Info("hello")
	p.Close()
	if _, err := os.Stat(victim); !os.IsNotExist(err) {
		t.Fatalf("symlinked logFile was followed")
	}
	for _, lf := range []string{"multinet.log", filepath.Join(logDir, "multinet.log")} {
		p, err = New(conf(lf), "", Env{})
		if err != nil {
			t.Fatal(err)
		}
		p.Log.Info("hello", "logFile", lf)
		p.Close()
	}
	b, err := os.ReadFile(filepath.Join(logDir, "multinet.log"))
	if err != nil || strings.Count(string(b), `"msg":"hello"`) != 2 {
		t.Fatalf("log under logDir: %q, %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(logDir, "multinet.log")); st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v, want 0600", st.Mode().Perm())
	}
	before := openFDs(t)
	for i := 0; i < 50; i++ {
		p, err := New(conf("multinet.log"), "", Env{})
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
	}
	if after := openFDs(t); after > before+2 {
		t.Errorf("open fds %d -> %d after 50 New+Close: log files leak", before, after)
	}
}

func nadFixture(ns, name, config string) *nadv1.NetworkAttachmentDefinition {
	nad := &nadv1.NetworkAttachmentDefinition{}
	nad.Namespace, nad.Name, nad.Spec.Config = ns, name, config
	return nad
}
