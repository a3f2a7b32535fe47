package dpdk

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// A network-status as the meta-plugin writes it: the cluster network, a vhost-user slot, a
// vfio-pci VF, a kernel-netdev VF and a client-mode vhost-user slot.
const status = `[
  {"name":"cbr0","interface":"eth0","ips":["10.244.0.5"],"default":true,"dns":{}},
  {"name":"default/vhu-a","interface":"net1","mac":"02:00:00:00:00:0a","dns":{},
   "device-info":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"server","path":"/var/run/vhu/vhost-0/sock"}}},
  {"name":"default/sriov-dpdk","interface":"net2","dns":{},
   "device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:00:05.1","pf-pci-address":"0000:00:05.0"}}},
  {"name":"default/sriov-kernel","interface":"net3","ips":["10.56.0.4"],"dns":{},
   "device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:00:05.2"}}},
  {"name":"default/vhu-b","interface":"net4","dns":{},
   "device-info":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"client","path":"/var/run/vhu/vhost-1/sock"}}}
]`

// The device plugin's environment for the same pod (ours and upstream's shapes).
var env = []string{
	"PATH=/usr/bin",
	"PCIDEVICE_INTEL_COM_SRIOV_DPDK=0000:00:05.1",
	`PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO={"0000:00:05.1":{"generic":{"deviceID":"0000:00:05.1"},"vfio":{"mount":"/dev/vfio/vfio","dev-mount":"/dev/vfio/12"}}}`,
	"PCIDEVICE_INTEL_COM_SRIOV_NETDEV=0000:00:05.2",
	`PCIDEVICE_INTEL_COM_SRIOV_NETDEV_INFO={"0000:00:05.2":{"generic":{"deviceID":"0000:00:05.2"}}}`,
	"VHOSTUSER_EXAMPLE_COM_VHOST=/var/run/vhu/vhost-0/sock,/var/run/vhu/vhost-1/sock",
	`VHOSTUSER_EXAMPLE_COM_VHOST_INFO={"vhost-0":{"vhost-user":{"mode":"server","path":"/var/run/vhu/vhost-0/sock"}},"vhost-1":{"vhost-user":{"mode":"client","path":"/var/run/vhu/vhost-1/sock"}}}`,
}

func plan(t *testing.T, statusJSON string, env []string, drivers map[string]string) ([]string, []string) {
	t.Helper()
	var st []Device
	if statusJSON != "" {
		var err error
		if st, err = FromNetworkStatus([]byte(statusJSON)); err != nil {
			t.Fatal(err)
		}
	}
	e, err := ParseEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	devs, skipped := Plan(st, e, func(a string) string { return drivers[a] })
	return EALArgs(devs, Options{}), skipped
}

func TestEALArgsFollowTheNetworksOrder(t *testing.T) {
	args, skipped := plan(t, status, env, nil)
	want := []string{"--vdev", "net_virtio_user0,path=/var/run/vhu/vhost-0/sock,server=1",
		"-a", "0000:00:05.1",
		"--vdev", "net_virtio_user1,path=/var/run/vhu/vhost-1/sock"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("args\n got %q\nwant %q", args, want)
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0], "0000:00:05.2") {
		t.Fatalf("the kernel-netdev VF should be reported skipped: %q", skipped)
	}
}

func TestEALArgsFromTheEnvironmentAlone(t *testing.T) {
	// Without network-status: variable order, and the vhost-user mode from _INFO.
	args, _ := plan(t, "", env, nil)
	want := []string{"-a", "0000:00:05.1",
		"--vdev", "net_virtio_user0,path=/var/run/vhu/vhost-0/sock,server=1",
		"--vdev", "net_virtio_user1,path=/var/run/vhu/vhost-1/sock"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("args\n got %q\nwant %q", args, want)
	}
	// No _INFO (another device plugin): sysfs says which driver the VF has.
	args, _ = plan(t, "", []string{"PCIDEVICE_X_Y=0000:00:05.1,0000:00:05.2"}, map[string]string{"0000:00:05.1": "vfio-pci", "0000:00:05.2": "igbvf"})
	if want := []string{"-a", "0000:00:05.1"}; !reflect.DeepEqual(args, want) {
		t.Fatalf("args %q, want %q", args, want)
	}
	// Only vhost-user: EAL must not probe the PCI bus.
	args, _ = plan(t, "", []string{"VHOSTUSER_A=/s/0/sock"}, nil)
	if want := []string{"--vdev", "net_virtio_user0,path=/s/0/sock", "--no-pci"}; !reflect.DeepEqual(args, want) {
		t.Fatalf("args %q, want %q", args, want)
	}
}

// A pool with a containerDir the NAD does not repeat: network-status names the slot's host
// path, the device plugin's variable the path the container sees. One port, at the pod's path,
// in network-status's order (not a second virtio-user port on a path the pod cannot reach).
func TestEALArgsTakeTheSocketThePodSees(t *testing.T) {
	hostStatus := strings.ReplaceAll(status, "/var/run/vhu/", "/var/lib/multinet/vhost/")
	args, _ := plan(t, hostStatus, env, nil)
	want := []string{"--vdev", "net_virtio_user0,path=/var/run/vhu/vhost-0/sock,server=1",
		"-a", "0000:00:05.1",
		"--vdev", "net_virtio_user1,path=/var/run/vhu/vhost-1/sock"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("args\n got %q\nwant %q", args, want)
	}
}

func TestEALArgsOptions(t *testing.T) {
	st, err := FromNetworkStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := Plan(st[:1], nil, nil)
	got := EALArgs(devs, Options{Queues: 2, MAC: true})
	want := []string{"--vdev", "net_virtio_user0,path=/var/run/vhu/vhost-0/sock,server=1,queues=2,mac=02:00:00:00:00:0a", "--no-pci"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseAnnotationsAsKubeletWritesThem(t *testing.T) {
	file := fmt.Sprintf("k8s.v1.cni.cncf.io/network-status=%q\nkubernetes.io/config.source=%q\n", status, "api")
	a, err := ParseAnnotations([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if a[NetworkStatusAnnot] != status || a["kubernetes.io/config.source"] != "api" {
		t.Fatalf("parsed %q", a)
	}
	for _, bad := range []string{"novalue\n", `k="unterminated` + "\n", "k=bare\n"} {
		if _, err := ParseAnnotations([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestBadInputsAreNamed(t *testing.T) {
	for _, tc := range []struct{ status, want string }{
		{`[{"name":"n","interface":"net1","device-info":{"type":"pci","pci":{"pci-address":"05.1"}}}]`, "net1"},
		{`[{"name":"n","interface":"net1","device-info":{"type":"pci","pci":{}}}]`, "without pci-address"},
		{`[{"name":"n","interface":"net1","device-info":{"type":"vhost-user","vhost-user":{"path":"/a,b/sock"}}}]`, "comma"},
		{`[{"name":"n","interface":"net1","device-info":{"type":"vhost-user","vhost-user":{"path":"rel/sock"}}}]`, "not absolute"},
		{`[{"name":"n","interface":"net1","device-info":{"type":"vhost-user","vhost-user":{"path":"/s","mode":"both"}}}]`, "mode"},
		{`[{"name":"n","interface":"net1","mac":"02:00,server=0","device-info":{"type":"vhost-user","vhost-user":{"path":"/s"}}}]`, "mac"},
		{`{}`, "network-status"},
	} {
		if _, err := FromNetworkStatus([]byte(tc.status)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.status, err, tc.want)
		}
	}
	for _, e := range [][]string{{"PCIDEVICE_A=0000:00:05.1;x"}, {"VHOSTUSER_A=/a b"}, {"PCIDEVICE_A=0000:00:05.1", "PCIDEVICE_A_INFO={"}} {
		if _, err := ParseEnv(e); err == nil || !strings.Contains(err.Error(), "_A") {
			t.Errorf("%q: error %v, want the variable named", e, err)
		}
	}
}

// EAL splits devargs on commas and words on spaces: nothing parsed may smuggle either in.
func checkArgs(t *testing.T, devs []Device) {
	for _, a := range EALArgs(devs, Options{MAC: true}) {
		if strings.ContainsAny(a, " \t\n") {
			t.Fatalf("argument %q has white space", a)
		}
	}
	for _, d := range devs {
		if strings.Contains(d.Socket, ",") || strings.Contains(d.MAC, ",") {
			t.Fatalf("device %+v carries a comma", d)
		}
	}
}

func FuzzFromNetworkStatus(f *testing.F) {
	f.Add([]byte(status))
	f.Fuzz(func(t *testing.T, data []byte) {
		devs, err := FromNetworkStatus(data)
		if err != nil {
			return
		}
		checkArgs(t, devs)
	})
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add([]byte(fmt.Sprintf("%s=%q\n", NetworkStatusAnnot, status)))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAnnotations(data)
		if err != nil {
			return
		}
		for k := range a {
			if strings.Contains(k, "\n") || k == "" {
				t.Fatalf("key %q", k)
			}
		}
	})
}

func FuzzParseEnv(f *testing.F) {
	f.Add(strings.Join(env, "\n"))
	f.Fuzz(func(t *testing.T, data string) {
		e, err := ParseEnv(strings.Split(data, "\n"))
		if err != nil {
			return
		}
		devs, _ := Plan(nil, e, func(string) string { return "vfio-pci" })
		checkArgs(t, devs)
		for _, d := range devs {
			if d.Kind == KindPCI && !pciRe.MatchString(d.PCI) {
				t.Fatalf("bad pci %q", d.PCI)
			}
		}
	})
}
