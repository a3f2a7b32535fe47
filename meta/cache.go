package meta

import "github.com/multinet-io/multinet/meta/delcache"

// The delegate cache lives in package delcache, which has no Kubernetes imports: the thick-mode
// shim reads the same files to delete a pod when the node agent is down.
type cacheEntry = delcache.Entry

func saveCache(cacheDir string, e *cacheEntry) error { return delcache.Save(cacheDir, e) }

// loadCache returns (nil, nil) when there is no cache for the container.
func loadCache(cacheDir, containerID string) (*cacheEntry, error) {
	return delcache.Load(cacheDir, containerID)
}

func removeCache(cacheDir, containerID string) { delcache.Remove(cacheDir, containerID) }

// cachedContainers lists the container IDs with a delegate cache (for GC).
func cachedContainers(cacheDir string) []string { return delcache.Containers(cacheDir) }
