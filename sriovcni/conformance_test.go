package sriovcni

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/multinet-io/multinet/conformance"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
	"github.com/multinet-io/multinet/vfmanager"
)

// upstreamFixture is sriov-cni's own fake sysfs (pkg/utils/testing.go) as a kernel-shaped tree:
// PF 0000:af:00.1 (enp175s0f1) with VF0 0000:af:06.0 (enp175s6) and VF1 0000:af:06.1
// (enp175s7), and a NIC without VFs, 0000:05:00.0 (ens1, ens1d1). The VF 0000:03:02.0 is the
// one upstream's configuration reference assumes exists.
func upstreamFixture(t *testing.T) *pci.SysFS {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:af:00.1", Vendor: "8086", Device: "158b", Driver: "i40e", Netdev: "enp175s0f1", TotalVFs: 64})
	tr.AddVF(pcitest.VF{PF: "0000:af:00.1", Index: 0, Address: "0000:af:06.0", Vendor: "8086", Device: "154c", Driver: "iavf", Netdev: "enp175s6"})
	tr.AddVF(pcitest.VF{PF: "0000:af:00.1", Index: 1, Address: "0000:af:06.1", Vendor: "8086", Device: "154c", Driver: "iavf", Netdev: "enp175s7"})
	tr.AddNIC(pcitest.NIC{Address: "0000:05:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", Netdev: "ens1"})
	tr.SetNetdevs("0000:05:00.0", "ens1", "ens1d1")
	tr.AddPF(pcitest.PF{Address: "0000:03:00.0", Vendor: "8086", Device: "158b", Driver: "i40e", Netdev: "ens3f0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:03:00.0", Index: 0, Address: "0000:03:02.0", Vendor: "8086", Device: "154c", Driver: "iavf", Netdev: "ens3f0v0"})
	return pci.New(tr.Root)
}

// TestConformanceNetconfs runs sriov-cni's netconf cases through LoadConf and, for a netconf it
// accepts, the VF resolution ADD does before touching anything (Plugin.inspect) on upstream's
// fixture. Cases about the PF calls compare the VF settings our netconf asks for with the
// calls upstream makes.
func TestConformanceNetconfs(t *testing.T) {
	sys := upstreamFixture(t)
	conformance.Run(t, "sriovcni-netconfs.json", func(t *testing.T, c conformance.Case) conformance.Outcome {
		return judgeNetconf(t, sys, c)
	})
}

func judgeNetconf(t *testing.T, sys *pci.SysFS, c conformance.Case) conformance.Outcome {
	stage := c.Str("stage")
	switch {
	case stage == "GetMacAddressForResult" || stage == "ResetVFConfig":
		// Their inputs are upstream's in-memory state (OrigVfState, DPDKMode), not a netconf.
		return conformance.Differs("stage %s takes upstream-internal state; not a wire format we read", stage)
	case c.Has("precondition"):
		return conformance.Differs("precondition %q is a race between two ADDs, judged by a named test", c.Str("precondition"))
	case stage == "getVfInfo":
		_, err := (&Plugin{Sys: sys}).inspect(c.Str("deviceID"))
		if (err != nil) != c.ExpectError() {
			return conformance.Differs("resolving %s: err = %v", c.Str("deviceID"), err)
		}
		return conformance.Same()
	case c.Has("pf_mtu"):
		return conformance.Differs("upstream records the PF MTU in its cached netconf; ours caches no PF MTU")
	}
	raw := []byte(c.Str("netconf_raw"))
	if len(raw) == 0 || c.Has("netconf_raw_assembled") || strings.Contains(string(raw), "${") {
		var nc map[string]any
		if err := c.Decode("netconf", &nc); err != nil {
			t.Fatal(err)
		}
		if c.Has("translated_from_go_struct") {
			translateGoStruct(sys, nc)
		}
		raw, _ = json.Marshal(nc)
	}
	conf, err := LoadConf(raw, "")
	var v *vfInfo
	if err == nil {
		v, err = (&Plugin{Sys: sys}).inspect(conf.DeviceID)
	}
	if c.ExpectError() {
		if err == nil {
			return conformance.Differs("accepted (VF %s, settings %s)", conf.DeviceID, settings(conf.VF))
		}
		return conformance.Same()
	}
	if err != nil {
		return conformance.Differs("refused: %v", err)
	}
	var resolved map[string]any
	_ = c.Decode("resolved", &resolved)
	for k, want := range resolved {
		var got any
		switch k {
		case "Master":
			got = v.pfNetdev
		case "VFID":
			got = float64(v.index)
		case "OrigVfState.HostIFName":
			got = v.netdevs[0]
		case "DPDKMode":
			got = v.dpdk
		default:
			t.Fatalf("resolved field %s unknown to the judge", k)
		}
		if got != want {
			return conformance.Differs("%s = %v, upstream %v", k, got, want)
		}
	}
	var norm map[string]any
	_ = c.Decode("normalized", &norm)
	if p, ok := norm["vlanProto"].(string); ok && orDot1Q(conf.VF.VLANProto) != p {
		return conformance.Differs("vlanProto %q, upstream %q", conf.VF.VLANProto, p)
	}
	var calls []string
	if _ = c.Decode("expected_netlink_calls", &calls); calls != nil {
		if want, got := callSettings(calls), settings(conf.VF); want != got {
			return conformance.Differs("PF settings %s, upstream %s", got, want)
		}
	}
	calls = nil
	if _ = c.Decode("expected_calls_add", &calls); calls != nil {
		// The integration scripts record (and assert) only the VLAN calls.
		vlanOnly := conf.VF
		vlanOnly = vfmanager.VFConfig{VLAN: vlanOnly.VLAN, QoS: vlanOnly.QoS, VLANProto: vlanOnly.VLANProto}
		if want, got := callSettings(calls), settings(vlanOnly); want != got {
			return conformance.Differs("PF VLAN settings %s, upstream %s", got, want)
		}
	}
	var exp map[string]string
	_ = c.Decode("expected", &exp)
	if lvl, ok := exp["effective_log_level"]; ok {
		if got := effectiveLevel(conf); got != lvl {
			return conformance.Differs("log level %s, upstream %s", got, lvl)
		}
	}
	return conformance.Same()
}

// translateGoStruct turns upstream's struct-literal fields (Master, VFID) into the netconf
// that names the same VF: its deviceID.
func translateGoStruct(sys *pci.SysFS, nc map[string]any) {
	master, _ := nc["Master"].(string)
	vfid, _ := nc["VFID"].(float64)
	delete(nc, "Master")
	delete(nc, "VFID")
	if _, ok := nc["deviceID"]; ok || master == "" {
		return
	}
	if pf, err := sys.ByNetdev(master); err == nil {
		if a, err := sys.VFAddress(pf, int(vfid)); err == nil {
			nc["deviceID"] = a
		}
	}
	if _, ok := nc["deviceID"]; !ok {
		nc["deviceID"] = "0000:af:06.0"
	}
	for _, k := range []string{"name", "type"} {
		if _, ok := nc[k]; !ok {
			nc[k] = "sriov-net"
		}
	}
}

func orDot1Q(p string) string {
	if p == "" {
		return "802.1q"
	}
	return p
}

// settings renders the PF settings a VF config asks for, in one canonical form.
func settings(c vfmanager.VFConfig) string {
	var out []string
	if c.VLAN != nil {
		qos := 0
		if c.QoS != nil {
			qos = *c.QoS
		}
		out = append(out, fmt.Sprintf("vlan=%d qos=%d proto=%s", *c.VLAN, qos, orDot1Q(c.VLANProto)))
	}
	if c.MAC != nil {
		out = append(out, "mac="+c.MAC.String())
	}
	if c.MinTxRate != nil || c.MaxTxRate != nil {
		minR, maxR := 0, 0
		if c.MinTxRate != nil {
			minR = *c.MinTxRate
		}
		if c.MaxTxRate != nil {
			maxR = *c.MaxTxRate
		}
		out = append(out, fmt.Sprintf("rate=%d-%d", minR, maxR))
	}
	if c.SpoofChk != nil {
		out = append(out, "spoofchk="+strconv.FormatBool(*c.SpoofChk))
	}
	if c.Trust != nil {
		out = append(out, "trust="+strconv.FormatBool(*c.Trust))
	}
	if c.LinkState != "" {
		out = append(out, "state="+c.LinkState)
	}
	sort.Strings(out)
	return "[" + strings.Join(out, " ") + "]"
}

var (
	vlanCallRe  = regexp.MustCompile(`^LinkSetVfVlanQosProto \S+ (?:vf=)?\d+ (?:vlan=)?(\d+) (?:qos=)?(\d+) (?:proto=)?(\S+)`)
	rateCallRe  = regexp.MustCompile(`^LinkSetVfRate \S+ vf=\d+ min=(\d+) max=(\d+)`)
	boolCallRe  = regexp.MustCompile(`^LinkSetVf(Spoofchk|Trust) \S+ vf=\d+ (true|false)`)
	stateCallRe = regexp.MustCompile(`^LinkSetVfState \S+ vf=\d+ \d+ \(VF_LINK_STATE_(\w+)\)`)
	macCallRe   = regexp.MustCompile(`^LinkSetVfHardwareAddr \S+ vf=\d+ (\S+)`)
)

// callSettings reads upstream's recorded netlink calls back into the same canonical form.
func callSettings(calls []string) string {
	var out []string
	for _, call := range calls {
		switch {
		case strings.HasPrefix(call, "LinkByName "):
		case vlanCallRe.MatchString(call):
			m := vlanCallRe.FindStringSubmatch(call)
			proto := map[string]string{"0x8100": "802.1q", "33024": "802.1q", "0x88a8": "802.1ad", "34984": "802.1ad"}[m[3]]
			out = append(out, fmt.Sprintf("vlan=%s qos=%s proto=%s", m[1], m[2], proto))
		case rateCallRe.MatchString(call):
			m := rateCallRe.FindStringSubmatch(call)
			out = append(out, fmt.Sprintf("rate=%s-%s", m[1], m[2]))
		case boolCallRe.MatchString(call):
			m := boolCallRe.FindStringSubmatch(call)
			out = append(out, strings.ToLower(m[1])+"="+m[2])
		case stateCallRe.MatchString(call):
			out = append(out, "state="+strings.ToLower(stateCallRe.FindStringSubmatch(call)[1]))
		case macCallRe.MatchString(call):
			out = append(out, "mac="+macCallRe.FindStringSubmatch(call)[1])
		default:
			out = append(out, "unknown-call("+call+")")
		}
	}
	sort.Strings(out)
	return "[" + strings.Join(out, " ") + "]"
}

// effectiveLevel is the level the netconf's logLevel gives our logger, in upstream's names.
func effectiveLevel(c *NetConf) string {
	l, _ := (&Plugin{}).logger(c)
	for _, lv := range []struct {
		level slog.Level
		name  string
	}{{slog.LevelDebug, "debug"}, {slog.LevelInfo, "info"}, {slog.LevelWarn, "warning"}, {slog.LevelError, "error"}} {
		if l.Enabled(context.Background(), lv.level) {
			return lv.name
		}
	}
	return "none"
}
