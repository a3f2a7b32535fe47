package pci_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

func TestScanMatchesDevice(t *testing.T) {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:3b:00.0", Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "ens1f0", TotalVFs: 8})
	for i := 0; i < 3; i++ {
		tr.AddVF(pcitest.VF{PF: "0000:3b:00.0", Index: i, Address: fmt.Sprintf("0000:3b:01.%d", i), Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("ens1f0v%d", i)})
	}
	tr.AddNIC(pcitest.NIC{Address: "0000:00:1f.6", Vendor: "8086", Device: "15bb", Driver: "e1000e", Netdev: "eno1"})
	s := pci.New(tr.Root)
	got, err := s.Scan("0x02")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("Scan found %d devices, want 5", len(got))
	}
	for _, d := range got {
		one, err := s.Device(d.Address)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*one, d) {
			t.Errorf("Scan %+v\n   Device %+v", d, *one)
		}
	}
	if got[3].Address != "0000:3b:01.1" || got[3].PFAddress != "0000:3b:00.0" || got[3].VFIndex != 1 {
		t.Errorf("VF 1 = %+v", got[3])
	}
	if acc, _ := s.Scan("0x12"); len(acc) != 0 {
		t.Errorf("accelerator scan found %v", acc)
	}
}
