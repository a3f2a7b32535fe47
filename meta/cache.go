package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// cacheEntry is what ADD records, before running any delegate, so that DEL can undo it after a
// restart, a reboot or with the API server gone.
type cacheEntry struct {
	ContainerID  string      `json:"containerID"`
	NetNS        string      `json:"netns"`
	IfName       string      `json:"ifname"`
	PodNamespace string      `json:"podNamespace"`
	PodName      string      `json:"podName"`
	PodUID       string      `json:"podUID,omitempty"`
	CNIArgs      [][2]string `json:"cniArgs,omitempty"`
	Delegates    []Delegate  `json:"delegates"`
}

func cachePath(cacheDir, containerID string) string {
	return filepath.Join(cacheDir, "delegates", containerID+".json")
}

func saveCache(cacheDir string, e *cacheEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(cachePath(cacheDir, e.ContainerID), b, 0o600); err != nil {
		return fmt.Errorf("delegate cache: %w", err)
	}
	return nil
}

// loadCache returns (nil, nil) when there is no cache for the container.
func loadCache(cacheDir, containerID string) (*cacheEntry, error) {
	b, err := os.ReadFile(cachePath(cacheDir, containerID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("delegate cache: %w", err)
	}
	var e cacheEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("delegate cache %s is corrupt: %w", cachePath(cacheDir, containerID), err)
	}
	return &e, nil
}

// removeCache drops the record and fsyncs the directory: a DEL reported done must not find
// its record back after a crash and run the delegates' DEL again.
func removeCache(cacheDir, containerID string) {
	fsutil.Remove(cachePath(cacheDir, containerID))
}

// cachedContainers lists the container IDs with a delegate cache (for GC).
func cachedContainers(cacheDir string) []string {
	entries, _ := os.ReadDir(filepath.Join(cacheDir, "delegates"))
	var ids []string
	for _, e := range entries {
		if n := e.Name(); filepath.Ext(n) == ".json" {
			ids = append(ids, n[:len(n)-len(".json")])
		}
	}
	return ids
}
