package meta

import (
	"context"
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/pci"
)

// Delegate is one network the meta-plugin runs for a pod (see package delcache).
type Delegate = delcache.Delegate

// DeviceLookup tells which device IDs kubelet allocated to the pod for a resource (sorted).
type DeviceLookup func(ctx context.Context, namespace, name, uid, resource string) ([]string, error)

// planner turns a pod and the config into the delegate list.
type planner struct {
	conf      *Config
	nets      Networks
	devices   DeviceLookup
	sys       *pci.SysFS           // the host's sysfs, for the policy's host view (nil: /sys)
	hostViews *HostViews           // nil: the policy reads the host per ADD
	nads      map[string]nadResult // this request's NAD lookups (see nad)
}

// plan builds the delegate list for a pod: the cluster network on ifname, then default
// networks and the pod's selection on net<i> or the requested names.
func (p *planner) plan(ctx context.Context, pod *corev1.Pod, podUID, ifname string) ([]Delegate, error) {
	var delegates []Delegate
	if err := p.checkAnnotationSize(pod); err != nil {
		return nil, err
	}
	cluster, statics, err := p.clusterDelegate(ctx, pod, ifname)
	if err != nil {
		return nil, err
	}
	delegates = append(delegates, cluster)

	var sels []Selection
	if !p.conf.isSystemNamespace(pod.Namespace) {
		for _, ref := range p.conf.DefaultNetworks {
			ns, name, err := ParseNetworkRef(ref, p.conf.MultinetNamespace)
			if err != nil {
				return nil, fmt.Errorf("defaultNetworks: %w", err)
			}
			sels = append(sels, Selection{Namespace: ns, Name: name})
		}
	}
	podSels, err := ParseSelection(pod.Annotations[NetworksAnnot], pod.Namespace)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	for _, s := range podSels {
		if err := p.conf.checkIsolation(pod, s.Namespace, s.Name, false); err != nil {
			return nil, err
		}
	}
	if err := p.checkAttachmentCount(pod, len(statics), len(sels), len(podSels)); err != nil {
		return nil, err
	}
	sels = append(sels, podSels...)

	pos := 0
	for _, st := range statics {
		pos++
		st.IfName = fmt.Sprintf("net%d", pos)
		delegates = append(delegates, st)
	}
	used := map[string]string{ifname: cluster.Name}
	for _, st := range statics {
		used[st.IfName] = st.Name
	}
	for _, s := range sels {
		pos++
		d, err := p.attachment(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		d.IfName = s.Interface
		if d.IfName == "" {
			d.IfName = fmt.Sprintf("net%d", pos)
		}
		if other, dup := used[d.IfName]; dup {
			return nil, fmt.Errorf("pod %s/%s: interface %s asked for twice (networks %s and %s)", pod.Namespace, pod.Name, d.IfName, other, d.Name)
		}
		used[d.IfName] = d.Name
		delegates = append(delegates, d)
	}
	// One default route per IP family: two requests contradict each other (Multus refuses too).
	asked := map[string]string{}
	for _, d := range delegates {
		for _, g := range d.DefaultRoute {
			fam := "IPv6"
			if net.ParseIP(g).To4() != nil {
				fam = "IPv4"
			}
			if other, dup := asked[fam]; dup {
				return nil, fmt.Errorf("pod %s/%s: default-route: networks %s and %s both ask for the %s default route; at most one may",
					pod.Namespace, pod.Name, other, d.Name, fam)
			}
			asked[fam] = d.Name
		}
	}
	if err := p.assignDevices(ctx, pod, podUID, delegates); err != nil {
		return nil, err
	}
	if err := p.enforcePolicy(pod, delegates, len(statics), sels); err != nil {
		return nil, err
	}
	ver := ""
	if l, err := cluster.List(); err == nil {
		ver = l.CNIVersion
	}
	aux, err := p.auxiliaryChain(ifname, ver)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if aux != nil {
		delegates = append(delegates, *aux)
	}
	return delegates, nil
}

func (p *planner) attachment(ctx context.Context, s Selection) (Delegate, error) {
	nad, err := p.nad(ctx, s.Namespace, s.Name)
	if err != nil {
		return Delegate{}, err
	}
	raw, err := nadConfig(nad, p.conf.ConfDir)
	if err != nil {
		return Delegate{}, err
	}
	conf, _, err := asConfList(raw)
	if err != nil {
		return Delegate{}, fmt.Errorf("network %s/%s: spec.config: %w", s.Namespace, s.Name, err)
	}
	d := Delegate{
		Name:         s.Namespace + "/" + s.Name,
		Conf:         conf,
		ResourceName: nad.Annotations[ResourceNameAnnot],
		DeviceID:     s.DeviceID,
		DefaultRoute: s.DefaultRoute,
	}
	if d.ResourceName != "" && s.DeviceID != "" {
		return Delegate{}, fmt.Errorf("network %s/%s: deviceID %s refused: the network takes its device from resource %s (a pod may not pick a device)",
			s.Namespace, s.Name, s.DeviceID, d.ResourceName)
	}
	caps := map[string]interface{}{}
	if len(s.IPs) > 0 {
		caps["ips"] = s.IPs
	}
	if s.MAC != "" {
		caps["mac"] = s.MAC
		d.Args = append(d.Args, [2]string{"MAC", s.MAC})
	}
	if len(s.IPs) > 0 {
		d.Args = append(d.Args, [2]string{"IP", strings.Join(s.IPs, ",")})
	}
	if s.InfinibandGUID != "" {
		caps["infinibandGUID"] = s.InfinibandGUID
	}
	if len(s.PortMappings) > 0 {
		caps["portMappings"] = s.PortMappings
	}
	if s.Bandwidth != nil {
		caps["bandwidth"] = s.Bandwidth
	}
	if len(caps) > 0 {
		d.CapabilityArgs = caps
	}
	if len(s.CNIArgs) > 0 {
		d.Conf, err = editPlugins(d.Conf, func(pl map[string]interface{}, _ bool) {
			args, _ := pl["args"].(map[string]interface{})
			if args == nil {
				args = map[string]interface{}{}
			}
			cni, _ := args["cni"].(map[string]interface{})
			if cni == nil {
				cni = map[string]interface{}{}
			}
			for k, v := range s.CNIArgs {
				cni[k] = v
			}
			args["cni"] = cni
			pl["args"] = args
		})
		if err != nil {
			return Delegate{}, err
		}
	}
	return d, nil
}
