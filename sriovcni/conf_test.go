package sriovcni

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const vfAddr = "0000:00:12.0"

func TestLoadConfAllFields(t *testing.T) {
	c, err := LoadConf([]byte(`{"cniVersion":"1.1.0","name":"sriov-net","type":"sriov",
		"deviceID":"0000:00:12.0","pciBusID":"0000:00:12.0","vlan":100,"vlanQoS":3,"vlanProto":"802.1AD",
		"mac":"02:00:00:00:00:aa","spoofchk":"off","trust":"on","link_state":"enable",
		"min_tx_rate":10,"max_tx_rate":100,"logLevel":"debug","logFile":"/tmp/x.log",
		"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	v := c.VF
	if *v.VLAN != 100 || *v.QoS != 3 || v.VLANProto != "802.1ad" || *v.SpoofChk || !*v.Trust ||
		v.LinkState != "enable" || *v.MinTxRate != 10 || *v.MaxTxRate != 100 || v.MAC.String() != "02:00:00:00:00:aa" {
		t.Errorf("VF config = %+v", v)
	}
	if c.EffectiveMAC.String() != "02:00:00:00:00:aa" || c.IPAM.Type != "host-local" || c.LogFile != "/tmp/x.log" || !c.HasAdminSettings() {
		t.Errorf("conf = %+v", c)
	}
}

func TestLoadConfMinimalAsksNothingOfThePF(t *testing.T) {
	c, err := LoadConf([]byte(`{"cniVersion":"0.4.0","name":"n","type":"sriov","deviceID":"00:12.0"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != vfAddr {
		t.Errorf("short address not normalized: %q", c.DeviceID)
	}
	if c.HasAdminSettings() || c.EffectiveMAC != nil {
		t.Errorf("minimal netconf asks for admin settings: %+v", c.VF)
	}
	// 802.1q alone (the default) is not a setting; it only goes with a VLAN.
	c, err = LoadConf([]byte(`{"name":"n","deviceID":"0000:00:12.0","vlanProto":"802.1q"}`), "")
	if err != nil || c.HasAdminSettings() {
		t.Errorf("vlanProto 802.1q without vlan: %v, %+v", err, c)
	}
}

func TestMACPrecedence(t *testing.T) {
	base := `{"name":"n","deviceID":"0000:00:12.0","mac":"02:00:00:00:00:01"%s}`
	rc := `,"runtimeConfig":{"mac":"02:00:00:00:00:03"}`
	args := "IgnoreUnknown=1;K8S_POD_NAME=p;MAC=02:00:00:00:00:02"
	cases := []struct{ extra, args, want string }{
		{"", "", "02:00:00:00:00:01"},
		{"", args, "02:00:00:00:00:02"},
		{rc, args, "02:00:00:00:00:03"},
		{rc, "", "02:00:00:00:00:03"},
	}
	for _, tc := range cases {
		c, err := LoadConf([]byte(strings.Replace(base, "%s", tc.extra, 1)), tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if c.EffectiveMAC.String() != tc.want || c.VF.MAC.String() != tc.want {
			t.Errorf("extra %q args %q: mac %s, want %s", tc.extra, tc.args, c.EffectiveMAC, tc.want)
		}
	}
}

func TestLoadConfRejects(t *testing.T) {
	cases := []struct{ conf, args, want string }{
		{`{"name":"n"}`, "", `"deviceID" is missing`},
		{`{"name":"n","deviceID":"eth0"}`, "", `"deviceID" "eth0" is not a PCI address`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlan":4095}`, "", `vf 0000:00:12.0: field "vlan": 4095 out of range 0-4094`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlan":-1}`, "", `field "vlan": -1 out of range`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlan":5,"vlanQoS":8}`, "", `field "vlanQoS": 8 out of range 0-7`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlanQoS":2}`, "", `field "vlanQoS": 2 needs a non-zero "vlan"`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlan":5,"vlanProto":"802.1x"}`, "", `field "vlanProto": "802.1x"`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlanProto":"802.1ad"}`, "", `field "vlanProto": 802.1ad needs a non-zero "vlan"`},
		{`{"name":"n","deviceID":"0000:00:12.0","spoofchk":"yes"}`, "", `field "spoofchk": "yes"`},
		{`{"name":"n","deviceID":"0000:00:12.0","trust":"true"}`, "", `field "trust": "true"`},
		{`{"name":"n","deviceID":"0000:00:12.0","link_state":"up"}`, "", `field "link_state": "up"`},
		{`{"name":"n","deviceID":"0000:00:12.0","min_tx_rate":-5}`, "", `field "min_tx_rate": -5 Mbps is negative`},
		{`{"name":"n","deviceID":"0000:00:12.0","max_tx_rate":-5}`, "", `field "max_tx_rate": -5 Mbps is negative`},
		{`{"name":"n","deviceID":"0000:00:12.0","min_tx_rate":50,"max_tx_rate":10}`, "", `field "min_tx_rate": 50 Mbps above max_tx_rate 10 Mbps`},
		{`{"name":"n","deviceID":"0000:00:12.0","mac":"zz"}`, "", `field "mac": "zz" is not an Ethernet MAC`},
		{`{"name":"n","deviceID":"0000:00:12.0","mac":"01:00:5e:00:00:01"}`, "", `field "mac": 01:00:5e:00:00:01 is a multicast`},
		{`{"name":"n","deviceID":"0000:00:12.0"}`, "MAC=nope", `field "CNI_ARGS MAC": "nope"`},
		{`{"name":"n","deviceID":"0000:00:12.0","runtimeConfig":{"mac":"1:2"}}`, "", `field "runtimeConfig.mac": "1:2"`},
		{`{"name":"n","deviceID":"0000:00:12.0","runtimeConfig":{"ips":["10.0.0.300/24"]}}`, "", `field "runtimeConfig.ips"`},
		{`{"name":"n","deviceID":"0000:00:12.0","logLevel":"loud"}`, "", `field "logLevel": "loud"`},
		{`{"cniVersion":"9.9.9","name":"n","deviceID":"0000:00:12.0"}`, "", `cniVersion "9.9.9" not supported`},
		{`{"name":"n","deviceID":"0000:00:12.0","vlan":"5"}`, "", `parse netconf`},
		{`not json`, "", `parse netconf`},
	}
	for _, tc := range cases {
		_, err := LoadConf([]byte(tc.conf), tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.conf, err, tc.want)
		}
	}
}

func TestLoadConfPrevResult(t *testing.T) {
	c, err := LoadConf([]byte(`{"cniVersion":"1.1.0","name":"n","deviceID":"0000:00:12.0",
		"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"net1","mac":"02:00:00:00:00:01","pciID":"0000:00:12.0"}],
		"ips":[{"address":"10.1.0.2/24","interface":0}]}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.PrevResult == nil {
		t.Fatal("prevResult not parsed")
	}
	b, _ := json.Marshal(c.PrevResult)
	if !strings.Contains(string(b), `"pciID":"0000:00:12.0"`) {
		t.Errorf("prevResult lost the pciID: %s", b)
	}
}

func TestRetryBusy(t *testing.T) {
	n := 0
	err := retryBusy(func() error {
		n++
		if n < 3 {
			return unix.EBUSY
		}
		return nil
	}, 5, time.Millisecond)
	if err != nil || n != 3 {
		t.Fatalf("busy twice then ok: err %v after %d tries", err, n)
	}
	n = 0
	other := errors.New("no")
	if err := retryBusy(func() error { n++; return other }, 5, time.Millisecond); err != other || n != 1 {
		t.Fatalf("other error retried: %v after %d tries", err, n)
	}
	n = 0
	if err := retryBusy(func() error { n++; return unix.EBUSY }, 3, time.Millisecond); !errors.Is(err, unix.EBUSY) || n != 3 {
		t.Fatalf("always busy: %v after %d tries", err, n)
	}
}

func TestTmpNameFitsAndDiffers(t *testing.T) {
	a, b := tmpName("0000:00:12.0"), tmpName("0000:00:12.1")
	if len(a) > 15 || a == b || a != tmpName("0000:00:12.0") {
		t.Fatalf("tmp names %q %q", a, b)
	}
}

// FuzzLoadConf: the loader never panics, and whatever it accepts is within the ranges the
// kernel takes and names a full PCI address.
func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"sriov","deviceID":"0000:00:12.0","vlan":100,"vlanQoS":3,"vlanProto":"802.1ad","mac":"02:00:00:00:00:aa","spoofchk":"off","trust":"on","link_state":"auto","min_tx_rate":1,"max_tx_rate":10}`), "MAC=02:00:00:00:00:01")
	f.Add([]byte(`{"name":"n","deviceID":"00:12.0","runtimeConfig":{"mac":"02:00:00:00:00:03","ips":["10.0.0.1/24"]}}`), "")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		c, err := LoadConf(conf, args)
		if err != nil {
			return
		}
		if len(c.DeviceID) != len("0000:00:00.0") {
			t.Fatalf("accepted deviceID %q", c.DeviceID)
		}
		if err := c.VF.Validate(); err != nil {
			t.Fatalf("accepted a config vfmanager refuses: %v", err)
		}
		if c.EffectiveMAC != nil && len(c.EffectiveMAC) != 6 {
			t.Fatalf("accepted mac %v", c.EffectiveMAC)
		}
	})
}
