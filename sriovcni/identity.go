package sriovcni

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/pci"
)

// vethPeerID prefixes the identity of a simulated VF (see netdevIdentity).
const vethPeerID = "veth-peer/"

// netdevIdentity names a VF's netdev by what a pod cannot change: the device the kernel says it
// belongs to (IFLA_PARENT_DEV_NAME, the target of /sys/class/net/<if>/device: "pci/<BDF>"). A
// pod with NET_ADMIN can rename its interface or change its MAC, not its parent device. A
// simulated VF (a veth on a node without SR-IOV hardware) has no parent device; it is named by
// its peer, which stays in the host. Kernels before 5.14 do not report the parent device over
// netlink: the driver's bus-info (ethtool) names the same PCI function. "" when nothing does:
// the VF is then found by name only.
func netdevIdentity(l netlink.Link) string {
	a := l.Attrs()
	if a.ParentDev != "" {
		return a.ParentDevBus + "/" + a.ParentDev
	}
	if bus := busInfo(a.Name); pci.ValidAddress(bus) {
		return "pci/" + bus
	}
	if _, ok := l.(*netlink.Veth); ok && a.ParentIndex > 0 {
		return fmt.Sprintf("%s%d", vethPeerID, a.ParentIndex)
	}
	return ""
}

// findByIdentity returns the link of the current netns (a pod's) whose identity is id, nil when
// there is none. A veth's peer index is only meaningful with the namespace the peer is in: it
// must be the host's (hostNS), or a pod's own veth pair could pose as the VF.
func findByIdentity(id string, hostNS ns.NetNS) netlink.Link {
	if id == "" {
		return nil
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil
	}
	hostID := -2
	if strings.HasPrefix(id, vethPeerID) && hostNS != nil {
		if nsid, err := netlink.GetNetNsIdByFd(int(hostNS.Fd())); err == nil {
			hostID = nsid
		}
	}
	for _, l := range links {
		if netdevIdentity(l) != id {
			continue
		}
		if strings.HasPrefix(id, vethPeerID) && l.Attrs().NetNsID != hostID {
			continue
		}
		return l
	}
	return nil
}

// randomTmpName is a temporary netdev name no pod can occupy in advance.
func randomTmpName() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "mnvr" + hex.EncodeToString(b)
}

// busInfo is the ethtool bus-info of a netdev of the current network namespace, "" when its
// driver reports none (veth) or the query fails.
func busInfo(name string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
	if err != nil {
		return ""
	}
	return unix.ByteSliceToString(info.Bus_info[:])
}
