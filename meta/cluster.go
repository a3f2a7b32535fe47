package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	corev1 "k8s.io/api/core/v1"
)

// clusterConf resolves clusterNetwork: a path to a file or directory, a NAD, or a conf name in confDir.
func (p *planner) clusterConf(ctx context.Context, ref string) ([]byte, error) {
	if filepath.IsAbs(ref) {
		st, err := os.Stat(ref)
		if err != nil {
			return nil, fmt.Errorf("clusterNetwork %s: %w", ref, err)
		}
		path := ref
		if st.IsDir() {
			if path, err = FirstForeignConf(ref); err != nil {
				return nil, fmt.Errorf("clusterNetwork %s: %w", ref, err)
			}
		}
		b, err := loadConfFile(path)
		if err != nil {
			return nil, fmt.Errorf("clusterNetwork %s: %w", ref, err)
		}
		return b, nil
	}
	// A NAD in the plugin's namespace first, then a conf in confDir with that name.
	if p.nets != nil {
		nad, err := p.nad(ctx, p.conf.MultinetNamespace, ref)
		if err == nil {
			return nadConfig(nad, p.conf.ConfDir)
		}
		if !errors.Is(err, ErrNADNotFound) {
			return nil, fmt.Errorf("clusterNetwork %s: %w", ref, err)
		}
	}
	b, err := nadutils.GetCNIConfigFromFile(ref, p.conf.ConfDir)
	if err != nil {
		return nil, fmt.Errorf("clusterNetwork %q: no NAD %s/%s and no conf named so in %s: %w", ref, p.conf.MultinetNamespace, ref, p.conf.ConfDir, err)
	}
	return b, nil
}

// clusterDelegate resolves eth0's network: the pod's default-network annotation, the static
// delegates' master, or clusterNetwork. The other static delegates are returned too.
func (p *planner) clusterDelegate(ctx context.Context, pod *corev1.Pod, ifname string) (Delegate, []Delegate, error) {
	var statics []Delegate
	var raw []byte
	var err error
	if ref := pod.Annotations[DefaultNetworkAnnot]; ref != "" {
		ns, name, perr := ParseNetworkRef(ref, p.conf.MultinetNamespace)
		if perr != nil {
			return Delegate{}, nil, fmt.Errorf("pod %s/%s: annotation %s: %w", pod.Namespace, pod.Name, DefaultNetworkAnnot, perr)
		}
		// Isolation holds for eth0 too.
		if err := p.conf.checkIsolation(pod, ns, name, true); err != nil {
			return Delegate{}, nil, err
		}
		nad, nerr := p.nad(ctx, ns, name)
		if nerr != nil {
			return Delegate{}, nil, fmt.Errorf("pod %s/%s: annotation %s: %w", pod.Namespace, pod.Name, DefaultNetworkAnnot, nerr)
		}
		if raw, err = nadConfig(nad, p.conf.ConfDir); err != nil {
			return Delegate{}, nil, fmt.Errorf("pod %s/%s: annotation %s: %w", pod.Namespace, pod.Name, DefaultNetworkAnnot, err)
		}
	}
	if len(p.conf.Delegates) > 0 {
		master := 0
		for i, d := range p.conf.Delegates {
			var probe struct {
				Master bool `json:"masterplugin"`
			}
			if json.Unmarshal(d, &probe) == nil && probe.Master {
				master = i
				break
			}
		}
		for i, d := range p.conf.Delegates {
			if i == master {
				if raw == nil {
					raw = d
				}
				continue
			}
			conf, name, err := asConfList(d)
			if err == nil {
				err = refuseOwnTypes(fmt.Sprintf("static delegate %q", name), conf)
			}
			if err != nil {
				return Delegate{}, nil, fmt.Errorf("delegates[%d]: %w", i, err)
			}
			statics = append(statics, Delegate{Name: name, Conf: conf})
		}
	}
	if raw == nil {
		if raw, err = p.clusterConf(ctx, p.conf.ClusterNetwork); err != nil {
			return Delegate{}, nil, err
		}
	}
	conf, name, err := asConfList(raw)
	if err == nil {
		err = refuseOwnTypes(fmt.Sprintf("conf %q", name), conf)
	}
	if err != nil {
		return Delegate{}, nil, fmt.Errorf("cluster network: %w", err)
	}
	return Delegate{Name: name, IfName: ifname, IsDefault: true, Conf: conf, CapabilityArgs: p.conf.RuntimeConfig}, statics, nil
}
