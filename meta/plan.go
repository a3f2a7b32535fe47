package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
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
	conf    *Config
	nets    Networks
	devices DeviceLookup
	sys     *pci.SysFS           // the host's sysfs, for the policy's host view (nil: /sys)
	nads    map[string]nadResult // this request's NAD lookups (see nad)
}

// asConfList parses a conf or conflist and returns conflist bytes, so every delegate runs the
// same way (chained plugins and capability args included).
func asConfList(b []byte) ([]byte, string, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, "", fmt.Errorf("not JSON: %w", err)
	}
	var name string
	_ = json.Unmarshal(probe["name"], &name)
	if _, ok := probe["plugins"]; ok {
		l, err := libcni.ConfListFromBytes(b)
		if err != nil {
			return nil, "", err
		}
		if len(l.Plugins) == 0 {
			return nil, "", fmt.Errorf("conflist %q has no plugins", l.Name)
		}
		return b, l.Name, nil
	}
	var typ string
	_ = json.Unmarshal(probe["type"], &typ)
	if typ == "" {
		return nil, "", fmt.Errorf("conf %q has no type", name)
	}
	var version string
	_ = json.Unmarshal(probe["cniVersion"], &version)
	list := map[string]interface{}{"cniVersion": version, "name": name, "plugins": []json.RawMessage{b}}
	out, err := json.Marshal(list)
	if err != nil {
		return nil, "", err
	}
	if _, err := libcni.ConfListFromBytes(out); err != nil {
		return nil, "", err
	}
	return out, name, nil
}

// editPlugins applies f to each plugin object of a conflist (first == true for the main one).
func editPlugins(conflist []byte, f func(p map[string]interface{}, first bool)) ([]byte, error) {
	var l map[string]interface{}
	if err := json.Unmarshal(conflist, &l); err != nil {
		return nil, err
	}
	plugins, _ := l["plugins"].([]interface{})
	for i, p := range plugins {
		if m, ok := p.(map[string]interface{}); ok {
			f(m, i == 0)
		}
	}
	return json.Marshal(l)
}

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
		if p.conf.NamespaceIsolation && s.Namespace != pod.Namespace && !p.conf.isGlobalNamespace(s.Namespace) {
			return nil, fmt.Errorf("pod %s/%s: network %s/%s refused: namespaceIsolation allows only the pod's namespace and %v",
				pod.Namespace, pod.Name, s.Namespace, s.Name, p.conf.GlobalNamespaces)
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
		// Isolation holds for eth0 too; cluster networks live in the plugin's namespace.
		if p.conf.NamespaceIsolation && ns != pod.Namespace && ns != p.conf.MultinetNamespace && !p.conf.isGlobalNamespace(ns) {
			return Delegate{}, nil, fmt.Errorf("pod %s/%s: annotation %s: network %s/%s refused: namespaceIsolation allows only the pod's namespace, %s and %v",
				pod.Namespace, pod.Name, DefaultNetworkAnnot, ns, name, p.conf.MultinetNamespace, p.conf.GlobalNamespaces)
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

// assignDevices gives each resource-backed attachment one of the devices kubelet allocated to
// the pod for that resource, in sorted order, and injects deviceIDs into the delegates' confs.
func (p *planner) assignDevices(ctx context.Context, pod *corev1.Pod, podUID string, ds []Delegate) error {
	byResource := map[string][]int{}
	for i, d := range ds {
		if d.ResourceName != "" {
			byResource[d.ResourceName] = append(byResource[d.ResourceName], i)
		}
	}
	resources := make([]string, 0, len(byResource))
	for r := range byResource {
		resources = append(resources, r)
	}
	sort.Strings(resources)
	for _, r := range resources {
		if p.devices == nil {
			return fmt.Errorf("pod %s/%s: network %s needs resource %s but no device lookup is configured", pod.Namespace, pod.Name, ds[byResource[r][0]].Name, r)
		}
		ids, err := p.devices(ctx, pod.Namespace, pod.Name, podUID, r)
		if err != nil {
			return fmt.Errorf("pod %s/%s: resource %s: %w", pod.Namespace, pod.Name, r, err)
		}
		ids = append([]string(nil), ids...)
		sort.Strings(ids)
		idx := byResource[r]
		if len(ids) < len(idx) {
			return fmt.Errorf("pod %s/%s: resource %s: %d network(s) need a device but kubelet allocated %d to the pod (%s); request %s: %d in the pod's resources",
				pod.Namespace, pod.Name, r, len(idx), len(ids), strings.Join(ids, ","), r, len(idx))
		}
		for k, i := range idx {
			ds[i].DeviceID = ids[k]
		}
	}
	for i := range ds {
		if ds[i].DeviceID == "" {
			continue
		}
		id := ds[i].DeviceID
		var err error
		// Into every plugin, as Multus does: a chained plugin must not keep a device of the NAD
		// author's choosing. pciBusID only ever holds a PCI address (host-device reads it as a
		// sysfs path); a vhost-user slot or auxiliary device goes as deviceID only.
		ds[i].Conf, err = editPlugins(ds[i].Conf, func(pl map[string]interface{}, first bool) {
			pl["deviceID"] = id
			if _, has := pl["pciBusID"]; has || first || pl["type"] == "host-device" {
				if pciAddress(id) {
					pl["pciBusID"] = id
				} else {
					delete(pl, "pciBusID")
				}
			}
			if rc, ok := pl["runtimeConfig"].(map[string]interface{}); ok && rc["deviceID"] != nil {
				rc["deviceID"] = id
			}
		})
		if err != nil {
			return err
		}
		if ds[i].CapabilityArgs == nil {
			ds[i].CapabilityArgs = map[string]interface{}{}
		}
		ds[i].CapabilityArgs["deviceID"] = id
	}
	return nil
}

// statusEntry is a delegate's line of network-status. gateways are the result's gateway
// addresses: a default route without a next hop (host-local writes them so) is reported with
// its interface's gateway instead of the NAD client's "<nil>".
func statusEntry(d Delegate, st *nadv1.NetworkStatus, gateways []string) nadv1.NetworkStatus {
	out := *st
	var gws []string
	for _, g := range st.Gateway {
		if g == "<nil>" || g == "" {
			gws = append(gws, gateways...)
			continue
		}
		gws = append(gws, g)
	}
	out.Gateway = dedupe(gws)
	out.Name = d.Name
	if out.Interface == "" {
		out.Interface = d.IfName
	}
	// The NAD client already marked the one interface of a default delegate that carries the
	// default route; every other interface of that delegate is not the pod's default.
	out.Default = d.IsDefault && st.Default
	return out
}

func dedupe(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
