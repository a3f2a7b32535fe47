package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/multinet-io/multinet/meta/delcache"
)

// The walls between a tenant's NAD or a pod's annotation and the node. A delegate's conf comes
// from whoever may write a NAD in some namespace; the meta-plugin's own conf (binDir, cacheDir,
// logFile, kubeconfig, isolation) is the operator's. Running a meta-plugin as a delegate would
// hand the operator's settings to the tenant, so it never happens, and a nested run that slips
// through anyway (a copy of the binary under another name) refuses by itself.

// EnvDepth is set on every delegate the meta-plugin execs; a meta-plugin that finds it set was
// started by a meta-plugin and refuses to attach anything.
const EnvDepth = delcache.EnvDepth

var ownType = delcache.OwnType

func ownPluginType(conf []byte) string { return delcache.OwnPluginType(conf) }

// refuseOwnTypes fails a delegate conf that would run a meta-plugin; what names where it came
// from (a NAD as "NAD ns/name", "delegates[2]", "clusterNetwork ...").
func refuseOwnTypes(what string, conf []byte) error {
	if t := ownPluginType(conf); t != "" {
		return fmt.Errorf("%s: plugin type %q refused: multinet and Multus never run as a delegate (the nested instance would take its binDir, cacheDir, logFile and kubeconfig from the delegate's conf)", what, t)
	}
	return nil
}

// nadConfig is the NAD's CNI conf, as the NAD client's GetCNIConfig makes it (an empty
// spec.config means the conf of the NAD's name in confDir; a missing "name" is the NAD's),
// without its panic on spec.config "null" and refusing confs that would run a meta-plugin:
// an empty spec named like our generated conflist would make every ADD exec itself again.
func nadConfig(nad *nadv1.NetworkAttachmentDefinition, confDir string) ([]byte, error) {
	what := fmt.Sprintf("NAD %s/%s", nad.Namespace, nad.Name)
	if nad.Spec.Config == "" {
		path, b, err := confByName(nad.Name, confDir)
		if err != nil {
			return nil, fmt.Errorf("%s: no spec.config: %w", what, err)
		}
		if isOwn(path) {
			return nil, fmt.Errorf("%s: no spec.config, and the conf named %q in %s is multinet's own (%s): refused, it would run multinet inside itself",
				what, nad.Name, confDir, filepath.Base(path))
		}
		return b, refuseOwnTypes(what, b)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(nad.Spec.Config), &obj); err != nil {
		return nil, fmt.Errorf("%s: spec.config: %w", what, err)
	}
	if obj == nil {
		return nil, fmt.Errorf("%s: spec.config is null, want a CNI conf or conflist object", what)
	}
	b := []byte(nad.Spec.Config)
	var name string
	if json.Unmarshal(obj["name"], &name); name == "" {
		obj["name"], _ = json.Marshal(nad.Name)
		var err error
		if b, err = json.Marshal(obj); err != nil {
			return nil, fmt.Errorf("%s: spec.config: %w", what, err)
		}
	}
	return b, refuseOwnTypes(what, b)
}

// confByName finds the conf or conflist whose "name" is name in confDir (files in name order,
// backups skipped, unreadable files skipped: one broken file must not hide the others).
func confByName(name, confDir string) (string, []byte, error) {
	if name == "" {
		return "", nil, fmt.Errorf("no network name")
	}
	files, err := libcni.ConfFiles(confDir, []string{".conf", ".json", ".conflist"})
	if err != nil {
		return "", nil, fmt.Errorf("conf dir %s: %w", confDir, err)
	}
	for _, f := range files {
		if isBackup(filepath.Base(f)) {
			continue
		}
		if strings.HasSuffix(f, ".conflist") {
			if l, err := libcni.ConfListFromFile(f); err == nil && l.Name == name {
				return f, l.Bytes, nil
			}
			continue
		}
		if c, err := libcni.ConfFromFile(f); err == nil && c.Network.Name == name && c.Network.Type != "" {
			return f, c.Bytes, nil
		}
	}
	return "", nil, fmt.Errorf("no conf named %q in %s", name, confDir)
}

// nad looks a NAD up once per request: a pod naming the same NAD many times (or a hostile
// annotation doing so thousands of times) costs one GET, and every use sees the same object.
func (p *planner) nad(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	if p.nets == nil {
		return nil, fmt.Errorf("network %s/%s: no NAD source configured (set kubeconfig or networkDir in the multinet conf)", namespace, name)
	}
	key := namespace + "/" + name
	if r, ok := p.nads[key]; ok {
		return r.nad, r.err
	}
	nad, err := p.nets.NAD(ctx, namespace, name)
	if p.nads == nil {
		p.nads = map[string]nadResult{}
	}
	p.nads[key] = nadResult{nad, err}
	return nad, err
}

type nadResult struct {
	nad *nadv1.NetworkAttachmentDefinition
	err error
}

func (c *Config) maxAttachments() int {
	if c.MaxAttachments > 0 {
		return c.MaxAttachments
	}
	return DefaultMaxAttachments
}

func (c *Config) maxAnnotationBytes() int {
	if c.MaxAnnotationBytes > 0 {
		return c.MaxAnnotationBytes
	}
	return DefaultMaxAnnotationBytes
}

// checkAnnotationSize refuses a networks annotation larger than maxAnnotationBytes before it is
// parsed.
func (p *planner) checkAnnotationSize(pod *corev1.Pod) error {
	for _, k := range []string{NetworksAnnot, DefaultNetworkAnnot} {
		if n := len(pod.Annotations[k]); n > p.conf.maxAnnotationBytes() {
			return fmt.Errorf("pod %s/%s: annotation %s is %d bytes; at most %d (maxAnnotationBytes) are read",
				pod.Namespace, pod.Name, k, n, p.conf.maxAnnotationBytes())
		}
	}
	return nil
}

// checkAttachmentCount refuses more attachments than maxAttachments, before any NAD is read.
func (p *planner) checkAttachmentCount(pod *corev1.Pod, statics, defaults, selected int) error {
	if n := statics + defaults + selected; n > p.conf.maxAttachments() {
		return fmt.Errorf("pod %s/%s: %d attachments asked for (%d by annotation %s, %d defaultNetworks, %d static delegates); at most %d (maxAttachments) per pod",
			pod.Namespace, pod.Name, n, selected, NetworksAnnot, defaults, statics, p.conf.maxAttachments())
	}
	return nil
}

func (p *Plugin) exec() invoke.Exec {
	ex := p.Exec
	if ex == nil {
		ex = delcache.DefaultExec()
	}
	return delcache.DepthExec{Exec: ex, Depth: p.Depth}
}

// nested refuses work in a meta-plugin started by a meta-plugin.
func (p *Plugin) nested(verb string) error {
	if p.Depth == 0 {
		return nil
	}
	return fmt.Errorf("multinet %s refused: started as a delegate of multinet (%s=%d); a network whose plugin runs multinet again is a loop, fix that NAD or conf",
		verb, EnvDepth, p.Depth)
}

// recoverPanic turns a panic in a verb into an error naming the pod, so that no input can take
// the plugin (or a node agent running it in-process) down without an answer to the runtime.
func (p *Plugin) recoverPanic(verb, containerID, cniArgs string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	ref := parsePodRef(cniArgs)
	p.logger().Error("panic", "verb", verb, "container", containerID, "pod", ref.Namespace+"/"+ref.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	*err = fmt.Errorf("pod %s/%s (container %s): multinet %s: internal error: %v", ref.Namespace, ref.Name, containerID, verb, r)
}
