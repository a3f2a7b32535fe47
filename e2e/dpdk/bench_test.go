//go:build e2e_dpdk

package dpdke2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// BenchmarkVhostUserAttach: a vhost-user attachment from the runtime's ADD (meta-plugin +
// vhostuser plugin, as binaries) to OVS connected to the pod's socket. The pod's side is a
// plain unix listener created right after ADD returns, as a server-mode application would;
// OVS retries a missing socket once a second, which bounds the connect part.
func BenchmarkVhostUserAttach(b *testing.B) {
	n := newNode(b)
	p := n.newPod("bench", "vhost-0")
	var adds, conns []time.Duration
	for i := 0; i < b.N; i++ {
		p.cid = fmt.Sprintf("cid-bench-%d", i)
		t0 := time.Now()
		if err := n.add(p, "vhu-net"); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		l, err := net.Listen("unix", n.hostSocket("vhost-0"))
		if err != nil {
			b.Fatal(err)
		}
		_ = l.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := l.Accept()
		if err != nil {
			b.Fatalf("OVS did not connect to the slot's socket: %v", err)
		}
		t2 := time.Now()
		c.Close()
		l.Close()
		if err := n.del(p, "vhu-net"); err != nil {
			b.Fatal(err)
		}
		adds, conns = append(adds, t1.Sub(t0)), append(conns, t2.Sub(t1))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(adds, 50)), "add-p50-ms")
	b.ReportMetric(ms(pct(adds, 100)), "add-max-ms")
	b.ReportMetric(ms(pct(conns, 50)), "connect-p50-ms")
	b.ReportMetric(ms(pct(conns, 100)), "connect-max-ms")
	b.ReportMetric(0, "ns/op")
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

// BenchmarkPodToPodThroughput: testpmd txonly in one pod, rxonly in the other, through the
// OVS-DPDK bridge, for 5 s per iteration. On a 2-core machine without KVM both testpmds and
// the OVS PMD share the cores: a floor, not a claim.
func BenchmarkPodToPodThroughput(b *testing.B) {
	n := newNode(b)
	a, c := n.newPod("tpa", "vhost-0"), n.newPod("tpb", "vhost-1")
	for _, p := range []*pod{a, c} {
		if err := n.add(p, "vhu-net"); err != nil {
			b.Fatal(err)
		}
	}
	pa, pc := portOf(b, "vhost-0"), portOf(b, "vhost-1")
	eal := map[*pod][]string{a: n.dpdkArgs(a), c: n.dpdkArgs(c)}
	const d = 5 * time.Second
	var rx, sent, drop int
	for i := 0; i < b.N; i++ {
		r := runTraffic(b, a, c, pa, pc, eal, d)
		rx, sent, drop = rx+r.received, sent+r.sent, drop+r.ovsDrop
	}
	secs := d.Seconds() * float64(b.N)
	b.ReportMetric(float64(rx)/secs, "rx-pps")
	b.ReportMetric(float64(sent)/secs, "tx-pps")
	b.ReportMetric(100*float64(drop)/float64(max(sent, 1)), "ovs-drop-%")
	b.ReportMetric(0, "ns/op")
	for _, p := range []*pod{a, c} {
		if err := n.del(p, "vhu-net"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVhostUserPluginAdd: the vhostuser plugin's own ADD and DEL (binary exec'd as a
// runtime does, netconf with the deviceID the meta-plugin injects), without the cluster network.
func BenchmarkVhostUserPluginAdd(b *testing.B) {
	n := newNode(b)
	p := n.newPod("plug", "vhost-0")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"vhu-net","type":"vhostuser","deviceID":"vhost-0","bridge":%q,"vlan":%d,"mtu":1500,"ovsdbSocket":%q}`, bridge, vlan, ovsDB)
	run := func(cmd, cid string) time.Duration {
		c := exec.Command(binDir + "/vhostuser")
		c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+cid, "CNI_NETNS="+p.netns.Path(), "CNI_IFNAME=net1", "CNI_PATH="+binDir)
		c.Stdin = strings.NewReader(conf)
		t0 := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", cmd, err, out)
		}
		return time.Since(t0)
	}
	var adds, dels []time.Duration
	for i := 0; i < b.N; i++ {
		cid := fmt.Sprintf("cid-plug-%d", i)
		adds = append(adds, run("ADD", cid))
		dels = append(dels, run("DEL", cid))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(adds, 50)), "add-p50-ms")
	b.ReportMetric(ms(pct(adds, 100)), "add-max-ms")
	b.ReportMetric(ms(pct(dels, 50)), "del-p50-ms")
	b.ReportMetric(0, "ns/op")
}
