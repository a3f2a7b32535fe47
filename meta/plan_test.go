package meta

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/multinet-io/multinet/devinfo"
)

func standalone(t *testing.T, nads map[string]string) (*Config, *dirNetworks) {
	t.Helper()
	dir := t.TempDir()
	for name, doc := range nads {
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "cluster.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	conf, err := LoadConfig([]byte(`{"name":"m","type":"multinet","clusterNetwork":"` + filepath.Join(dir, "cluster.conflist") + `","networkDir":"` + dir + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	return conf, &dirNetworks{dir: dir, statusDir: t.TempDir()}
}

const sriovNAD = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: sriov-net
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/resourceName: intel.com/sriov_netdevice
spec:
  config: '{"cniVersion":"1.0.0","type":"sriov","vlan":100,"ipam":{}}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: plain-sriov
  namespace: default
spec:
  config: '{"cniVersion":"1.0.0","type":"sriov"}'
`

func podWith(networks string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cnf-1", UID: "uid-1",
		Annotations: map[string]string{NetworksAnnot: networks}}}
}

func deviceIDOf(t *testing.T, d Delegate) string {
	t.Helper()
	var l struct {
		Plugins []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(d.Conf, &l); err != nil {
		t.Fatal(err)
	}
	id, _ := l.Plugins[0]["deviceID"].(string)
	return id
}

// Each resource-backed attachment gets one of the pod's devices, in sorted order, injected as
// deviceID; a pod cannot pick a device for such a network, and too few devices is an error
// naming the resource.
func TestPlanInjectsAllocatedDevices(t *testing.T) {
	conf, nets := standalone(t, map[string]string{"sriov": sriovNAD})
	var asked []string
	p := &planner{conf: conf, nets: nets, devices: func(_ context.Context, ns, name, uid, res string) ([]string, error) {
		asked = append(asked, ns+"/"+name+"/"+uid+"/"+res)
		return []string{"0000:00:12.4", "0000:00:12.2"}, nil
	}}
	ds, err := p.plan(context.Background(), podWith("sriov-net,sriov-net@n3"), "uid-1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 || deviceIDOf(t, ds[1]) != "0000:00:12.2" || deviceIDOf(t, ds[2]) != "0000:00:12.4" || ds[2].IfName != "n3" {
		t.Fatalf("delegates: %s=%s %s=%s", ds[1].IfName, deviceIDOf(t, ds[1]), ds[2].IfName, deviceIDOf(t, ds[2]))
	}
	if len(asked) != 1 || asked[0] != "default/cnf-1/uid-1/intel.com/sriov_netdevice" {
		t.Errorf("device lookups = %v, want one for the pod and resource", asked)
	}

	_, err = p.plan(context.Background(), podWith(`[{"name":"sriov-net","deviceID":"0000:00:12.6"}]`), "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "deviceID 0000:00:12.6 refused") {
		t.Errorf("pod-chosen device for a resource network: %v", err)
	}
	ds, err = p.plan(context.Background(), podWith(`[{"name":"plain-sriov","deviceID":"0000:00:12.6"}]`), "uid-1", "eth0")
	if err != nil || deviceIDOf(t, ds[1]) != "0000:00:12.6" {
		t.Errorf("deviceID of a network without resourceName: %v", err)
	}
	_, err = p.plan(context.Background(), podWith("sriov-net,sriov-net,sriov-net"), "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "resource intel.com/sriov_netdevice: 3 network(s) need a device but kubelet allocated 2") {
		t.Errorf("too few devices: %v", err)
	}
}

type uidNets struct{ *dirNetworks }

func (u uidNets) Pod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p, err := u.dirNetworks.Pod(ctx, ns, name)
	p.UID = types.UID("api-uid")
	return p, err
}

// A runtime still working on a deleted pod's sandbox must not attach networks to the new pod
// of the same name.
func TestAddRefusesStalePodUID(t *testing.T) {
	conf, nets := standalone(t, nil)
	log, _ := newLogger(conf)
	p := &Plugin{Conf: conf, Nets: uidNets{nets}, Log: log}
	_, err := p.Add(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net",
		Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnf-1;K8S_POD_UID=old-uid"})
	if err == nil || !strings.Contains(err.Error(), "K8S_POD_UID old-uid is not the API pod's UID api-uid") {
		t.Fatalf("err = %v", err)
	}
}

// cachedNets answers Pod from a stale cache (the replaced pod's UID) and LivePod with the
// runtime's pod, as the node agent's informer does right after a pod was recreated.
type cachedNets struct {
	*dirNetworks
	live int
}

func (c *cachedNets) Pod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p, err := c.dirNetworks.Pod(ctx, ns, name)
	p.UID = types.UID("replaced-uid")
	return p, err
}

func (c *cachedNets) LivePod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	c.live++
	p, err := c.dirNetworks.Pod(ctx, ns, name)
	p.UID = types.UID("new-uid")
	return p, err
}

// A cache still holding the pod a new one replaced under its name does not fail the new pod's
// ADD: the API server is asked, and its UID is the runtime's.
func TestStaleCachedPodAsksTheAPI(t *testing.T) {
	conf, nets := standalone(t, nil)
	log, _ := newLogger(conf)
	c := &cachedNets{dirNetworks: nets}
	p := &Plugin{Conf: conf, Nets: c, Log: log}
	pod, err := p.pod(context.Background(), podRef{Namespace: "default", Name: "cnf-1", UID: "new-uid"})
	if err != nil || pod.UID != "new-uid" || c.live != 1 {
		t.Fatalf("pod %v, err %v, live GETs %d: want the API's pod after one GET", pod, err, c.live)
	}
	// A pod whose UID is the cached one costs no GET.
	if _, err := p.pod(context.Background(), podRef{Namespace: "default", Name: "cnf-1", UID: "replaced-uid"}); err != nil || c.live != 1 {
		t.Fatalf("err %v, live GETs %d", err, c.live)
	}
}

// A default delegate with two pod interfaces marks only the one its gatewayed IP is on as
// default (as the NAD client does), not both.
func TestStatusesOneDefaultPerDelegate(t *testing.T) {
	gw := net.ParseIP("10.20.1.1")
	res := &types100.Result{CNIVersion: "1.0.0",
		Interfaces: []*types100.Interface{{Name: "eth0", Sandbox: "/ns"}, {Name: "net9", Sandbox: "/ns"}},
		IPs: []*types100.IPConfig{{Interface: types100.Int(0), Address: mustCIDR(t, "10.244.1.6/24")},
			{Interface: types100.Int(1), Address: mustCIDR(t, "10.20.1.3/24"), Gateway: gw}}}
	sts, err := (&Plugin{}).statuses("cid", []Delegate{{Name: "cbr0", IsDefault: true}}, []*types100.Result{res}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var defaults []string
	for _, s := range sts {
		if s.Default {
			defaults = append(defaults, s.Interface)
		}
	}
	if len(defaults) != 1 || defaults[0] != "net9" {
		t.Fatalf("default interfaces %v, want only net9 (the one with the gateway)", defaults)
	}
}

func mustCIDR(t *testing.T, s string) net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return *n
}

// One process, two device-info roots: each Plugin reads the device plugin's file under its own
// DevInfo, never under whatever the process environment says (the agent serves every request
// from one environment).
func TestDeviceInfoFromEachPluginsOwnRoot(t *testing.T) {
	t.Setenv(devinfo.EnvBase, t.TempDir()) // must not matter
	res := &types100.Result{CNIVersion: "1.0.0", Interfaces: []*types100.Interface{{Name: "net1", Sandbox: "/ns"}}}
	d := Delegate{Name: "default/sriov-a", IfName: "net1", ResourceName: "example.com/vf", DeviceID: "vf-1"}
	var got []string
	for _, pci := range []string{"0000:01:00.1", "0000:02:00.1"} {
		p := &Plugin{DevInfo: devinfo.Dir(t.TempDir())}
		if err := devinfo.Save(p.DevInfo.DPPath(d.ResourceName, d.DeviceID), devinfo.PCI(pci, "")); err != nil {
			t.Fatal(err)
		}
		sts, err := p.statuses("cid", []Delegate{d}, []*types100.Result{res}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 1 || sts[0].DeviceInfo == nil || sts[0].DeviceInfo.Pci == nil {
			t.Fatalf("status %+v: no device-info", sts)
		}
		got = append(got, sts[0].DeviceInfo.Pci.PciAddress)
	}
	if got[0] != "0000:01:00.1" || got[1] != "0000:02:00.1" {
		t.Fatalf("device-info per root = %v, want each plugin's own", got)
	}
}
