// Package meta is the multinet CNI meta-plugin: it runs the cluster network on eth0, then one
// delegate per NetworkAttachmentDefinition the pod selects, and records what it did as the pod's
// network-status. Formats and behaviour follow Multus so its users' manifests work unchanged.
package meta

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/podresources"
)

// Defaults, as on a kubeadm-style node.
const (
	DefaultConfDir            = "/etc/cni/net.d"
	DefaultBinDir             = delcache.DefaultBinDir
	DefaultCacheDir           = delcache.DefaultCacheDir
	DefaultNamespace          = "kube-system"
	DefaultPodResourcesSocket = podresources.DefaultSocket
	DefaultKubeletCheckpoint  = podresources.DefaultCheckpoint
	DefaultLogDir             = "/var/log/multinet"
	// A pod with more attachments than this is a mistake or an attack (each one is a NAD
	// lookup and a delegate exec, repeated on every kubelet retry).
	DefaultMaxAttachments = 32
	// The API server allows 256 KiB for all annotations; a real networks annotation is < 4 KiB.
	DefaultMaxAnnotationBytes = 64 << 10
)

// Config is the meta-plugin's netconf (`"type": "multinet"`).
type Config struct {
	types.PluginConf

	// ClusterNetwork is the network on eth0: a NAD name (in MultinetNamespace), a conf name in
	// ConfDir, a directory (its first conf) or a conf/conflist path.
	ClusterNetwork string `json:"clusterNetwork,omitempty"`
	// DefaultNetworks are attached to every pod outside SystemNamespaces, before its own.
	DefaultNetworks []string `json:"defaultNetworks,omitempty"`
	// Delegates is the old static style: the entry with "masterplugin": true (else the first)
	// is the cluster network, the others are attached to every pod.
	Delegates []json.RawMessage `json:"delegates,omitempty"`

	Kubeconfig string `json:"kubeconfig,omitempty"`
	// NetworkDir switches to standalone mode: NADs come from manifests in this folder, the
	// selection from CNI_ARGS MULTINET_NETWORKS, and network-status goes to a file.
	NetworkDir string `json:"networkDir,omitempty"`

	ConfDir  string `json:"confDir,omitempty"`
	BinDir   string `json:"binDir,omitempty"`
	CacheDir string `json:"cacheDir,omitempty"`
	// MultinetNamespace holds the clusterNetwork and defaultNetworks NADs; Multus calls it
	// multusNamespace, which is accepted too.
	MultinetNamespace string `json:"multinetNamespace,omitempty"`
	MultusNamespace   string `json:"multusNamespace,omitempty"`

	NamespaceIsolation bool     `json:"namespaceIsolation,omitempty"`
	GlobalNamespaces   []string `json:"-"`
	SystemNamespaces   []string `json:"-"`

	ReadinessIndicatorFile string `json:"readinessIndicatorFile,omitempty"`
	// ReadinessIndicatorWait is how long ADD waits for it, in seconds (DefaultReadinessWait).
	ReadinessIndicatorWait float64 `json:"readinessIndicatorWait,omitempty"`
	// AuxiliaryCNIChainName names a subdirectory next to the clusterNetwork conf whose plugins
	// run as an extra chain for every pod (Multus's field of the same name).
	AuxiliaryCNIChainName string `json:"auxiliaryCNIChainName,omitempty"`
	LogLevel              string `json:"logLevel,omitempty"`
	// LogFile is relative to LogDir or an absolute path inside it; anything else is ignored
	// (logs go to stderr) so that the conf can never make us write elsewhere as root.
	LogFile string `json:"logFile,omitempty"`
	LogDir  string `json:"logDir,omitempty"`

	// Limits on what one pod may ask for; 0 takes the default.
	MaxAttachments     int `json:"maxAttachments,omitempty"`
	MaxAnnotationBytes int `json:"maxAnnotationBytes,omitempty"`

	PodResourcesSocket string `json:"podResourcesSocket,omitempty"`
	KubeletCheckpoint  string `json:"kubeletCheckpoint,omitempty"`

	RuntimeConfig map[string]interface{} `json:"runtimeConfig,omitempty"`

	// Policy limits what NADs and pod annotations may do to the node (policy.go).
	Policy Policy `json:"policy,omitempty"`
}

// nsList accepts both a JSON list and Multus's comma-separated string.
type nsList []string

func (l *nsList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = nil
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				*l = append(*l, p)
			}
		}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("want a list of namespaces or a comma-separated string")
	}
	*l = list
	return nil
}

// LoadConfig parses and checks the netconf; nothing on the host is touched.
func LoadConfig(b []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("multinet config: %w", err)
	}
	var lists struct {
		Global nsList  `json:"globalNamespaces"`
		System *nsList `json:"systemNamespaces"`
	}
	if err := json.Unmarshal(b, &lists); err != nil {
		return nil, fmt.Errorf("multinet config: globalNamespaces/systemNamespaces: %w", err)
	}
	c.GlobalNamespaces = lists.Global
	if lists.System != nil {
		c.SystemNamespaces = *lists.System
	} else {
		c.SystemNamespaces = []string{DefaultNamespace}
	}
	if c.ConfDir == "" {
		c.ConfDir = DefaultConfDir
	}
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir
	}
	if c.MultinetNamespace == "" {
		c.MultinetNamespace = c.MultusNamespace
	}
	if c.MultinetNamespace == "" {
		c.MultinetNamespace = DefaultNamespace
	}
	if c.PodResourcesSocket == "" {
		c.PodResourcesSocket = DefaultPodResourcesSocket
	}
	if c.KubeletCheckpoint == "" {
		c.KubeletCheckpoint = DefaultKubeletCheckpoint
	}
	if c.LogDir == "" {
		c.LogDir = DefaultLogDir
	}
	if !filepath.IsAbs(c.LogDir) {
		return nil, fmt.Errorf("multinet config: logDir %q: want an absolute path", c.LogDir)
	}
	if c.MaxAttachments < 0 || c.MaxAnnotationBytes < 0 {
		return nil, fmt.Errorf("multinet config: maxAttachments %d, maxAnnotationBytes %d: want 0 (default) or more", c.MaxAttachments, c.MaxAnnotationBytes)
	}
	if c.MaxAttachments == 0 {
		c.MaxAttachments = DefaultMaxAttachments
	}
	if c.MaxAnnotationBytes == 0 {
		c.MaxAnnotationBytes = DefaultMaxAnnotationBytes
	}
	if c.ClusterNetwork == "" && len(c.Delegates) == 0 {
		return nil, fmt.Errorf("multinet config %q: needs clusterNetwork or delegates", c.Name)
	}
	if c.ClusterNetwork != "" && len(c.Delegates) > 0 {
		return nil, fmt.Errorf("multinet config %q: clusterNetwork and delegates are exclusive", c.Name)
	}
	if c.Kubeconfig != "" && c.NetworkDir != "" {
		return nil, fmt.Errorf("multinet config %q: kubeconfig (API mode) and networkDir (standalone mode) are exclusive", c.Name)
	}
	for i, d := range c.Delegates {
		var probe struct {
			Type    string            `json:"type"`
			Plugins []json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal(d, &probe); err != nil {
			return nil, fmt.Errorf("multinet config: delegates[%d]: %w", i, err)
		}
		if probe.Type == "" && len(probe.Plugins) == 0 {
			return nil, fmt.Errorf("multinet config: delegates[%d]: no type and no plugins", i)
		}
	}
	if err := c.Policy.validate(); err != nil {
		return nil, fmt.Errorf("multinet config: %w", err)
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "verbose", "info", "error", "panic", "warn", "warning":
	default:
		return nil, fmt.Errorf("multinet config: logLevel %q: want debug, verbose, info, warning or error", c.LogLevel)
	}
	return c, nil
}

// binPath is where delegates are looked up: binDir first, then the runtime's CNI_PATH.
func (c *Config) binPath(cniPath string) []string { return delcache.BinPath(c.BinDir, cniPath) }

func (c *Config) isSystemNamespace(ns string) bool {
	for _, s := range c.SystemNamespaces {
		if s == ns {
			return true
		}
	}
	return false
}

func (c *Config) isGlobalNamespace(ns string) bool {
	for _, s := range c.GlobalNamespaces {
		if s == ns {
			return true
		}
	}
	return false
}

// ready reports whether the readiness indicator (the cluster network's own conf, usually) is
// there: before it is, attaching a pod would give it a half-made network.
func (c *Config) ready() error {
	if c.ReadinessIndicatorFile == "" {
		return nil
	}
	if _, err := os.Stat(c.ReadinessIndicatorFile); err != nil {
		return fmt.Errorf("cluster network not ready: readinessIndicatorFile %s: %w", c.ReadinessIndicatorFile, err)
	}
	return nil
}
