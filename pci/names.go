package pci

import (
	"log/slog"
	"os"
	"sync"

	"github.com/jaypipes/pcidb"
)

// pci.ids locations of Debian's hwdata/pci.ids packages and other distributions.
var pciIDsPaths = []string{"/usr/share/hwdata/pci.ids", "/usr/share/misc/pci.ids", "/usr/share/pci.ids"}

var (
	namesOnce sync.Once
	namesDB   *pcidb.PCIDB
)

// loadNames parses pci.ids once per process. A host without the database simply gets no
// names: that is not an error.
func loadNames() *pcidb.PCIDB {
	namesOnce.Do(func() {
		for _, p := range pciIDsPaths {
			if _, err := os.Stat(p); err != nil {
				continue
			}
			db, err := pcidb.New(pcidb.WithPath(p))
			if err != nil {
				slog.Debug("pci.ids unreadable", "path", p, "err", err)
				continue
			}
			namesDB = db
			return
		}
	})
	return namesDB
}

// FillNames sets VendorName and DeviceName from the pci.ids database where it knows them.
// It is separate from discovery so hot paths (CNI ADD) never parse the database.
func FillNames(devs []Device) {
	db := loadNames()
	if db == nil {
		return
	}
	for i := range devs {
		if v, ok := db.Vendors[devs[i].Vendor]; ok {
			devs[i].VendorName = v.Name
		}
		if p, ok := db.Products[devs[i].Vendor+devs[i].DeviceID]; ok {
			devs[i].DeviceName = p.Name
		}
	}
}
