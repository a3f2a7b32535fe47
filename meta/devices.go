package meta

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

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
