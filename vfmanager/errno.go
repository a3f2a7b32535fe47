package vfmanager

import "golang.org/x/sys/unix"

var (
	errEOPNOTSUPP error = unix.EOPNOTSUPP
	errEINVAL     error = unix.EINVAL
)
