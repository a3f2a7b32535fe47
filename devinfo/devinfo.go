// Package devinfo reads and writes device-info files (NPWG device-info spec v1.1.0) at the paths
// the device plugin, the CNI plugins and the meta-plugin agree on:
//
//	<base>/dp/<resource>-<deviceID>-device.json   written by the device plugin on Allocate
//	<base>/cni/<net>-<containerID>_<ifname>       written by a CNI plugin on ADD, removed on DEL
//
// base is /var/run/k8s.cni.cncf.io/devinfo, or another Dir the binaries are given (cmd/ reads
// MULTINET_DEVINFO_DIR so tests and simulated nodes keep their files out of the host's).
package devinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// DefaultBase is where upstream components put device-info files.
const DefaultBase = "/var/run/k8s.cni.cncf.io/devinfo"

// EnvBase names the environment variable the binaries (in cmd/) read a Dir from.
const EnvBase = "MULTINET_DEVINFO_DIR"

// Dir is a device-info root, passed as a value so that one process can serve several; ""
// means DefaultBase.
type Dir string

// Root returns the directory, DefaultBase for "".
func (d Dir) Root() string {
	if d == "" {
		return DefaultBase
	}
	return string(d)
}

// DPPath is the device plugin's file for one allocated device ("/" in names becomes "-").
func (d Dir) DPPath(resourceName, deviceID string) string {
	return filepath.Join(d.Root(), "dp", fmt.Sprintf("%s-%s-device.json",
		strings.ReplaceAll(resourceName, "/", "-"), strings.ReplaceAll(deviceID, "/", "-")))
}

// CNIPath is a CNI plugin's file for one attachment.
func (d Dir) CNIPath(netName, containerID, ifName string) string {
	name := fmt.Sprintf("%s-%s_%s", netName, containerID, ifName)
	return filepath.Join(d.Root(), "cni", strings.ReplaceAll(name, "/", "-"))
}

// PCI builds a pci device-info; pfAddress may be empty.
func PCI(address, pfAddress string) *nadv1.DeviceInfo {
	return &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypePCI, Version: nadv1.DeviceInfoVersion,
		Pci: &nadv1.PciDevice{PciAddress: address, PfPciAddress: pfAddress}}
}

// Save writes the file atomically (replacing an older one: a retried ADD must not fail on the
// leftover of its first attempt). Readers (the meta-plugin, the workload) see the old file or
// the new one, never a half-written one, also across a crash.
func Save(path string, info *nadv1.DeviceInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	// Other components (and the workload, through a mount) read these: the base stays 0755.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("device-info %s: %w", path, err)
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("device-info: %w", err)
	}
	return nil
}

// Load reads a file; a missing file is (nil, nil).
func Load(path string) (*nadv1.DeviceInfo, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("device-info %s: %w", path, err)
	}
	var info nadv1.DeviceInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("device-info %s: %w", path, err)
	}
	return &info, nil
}

// Remove deletes a file; a missing one is not an error (DEL is idempotent).
func Remove(path string) error {
	if err := fsutil.Remove(path); err != nil {
		return fmt.Errorf("device-info %s: %w", path, err)
	}
	return nil
}
