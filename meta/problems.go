package meta

import "github.com/multinet-io/multinet/meta/delcache"

// Problem is what a DEL could not undo and went past (package delcache records it).
type Problem = delcache.Problem
