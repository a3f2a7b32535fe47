// Package netnsutil answers the one question every record keeper of ours asks about a pod's
// network namespace: is it gone?
package netnsutil

import (
	"errors"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Gone says whether path no longer names a network namespace. "" (a DPDK attachment, or none
// recorded) and a path that cannot be checked for another reason count as alive: a live pod's
// VF or slot must never be taken or called stale on a guess.
func Gone(path string) bool {
	if path == "" {
		return false
	}
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		return errors.As(err, &notExist) || errors.As(err, &notNS)
	}
	n.Close()
	return false
}
