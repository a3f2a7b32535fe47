package meta

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// checkIsolation is the namespaceIsolation rule, for every way a pod names a NAD: a pod may use
// its own namespace's networks and the global namespaces'; on eth0 (clusterNet: the
// default-network annotation) also the plugin's namespace, where cluster networks live.
func (c *Config) checkIsolation(pod *corev1.Pod, ns, name string, clusterNet bool) error {
	if !c.NamespaceIsolation || ns == pod.Namespace || c.isGlobalNamespace(ns) || clusterNet && ns == c.MultinetNamespace {
		return nil
	}
	if clusterNet {
		return fmt.Errorf("pod %s/%s: annotation %s: network %s/%s refused: namespaceIsolation allows only the pod's namespace, %s and %v",
			pod.Namespace, pod.Name, DefaultNetworkAnnot, ns, name, c.MultinetNamespace, c.GlobalNamespaces)
	}
	return fmt.Errorf("pod %s/%s: network %s/%s refused: namespaceIsolation allows only the pod's namespace and %v",
		pod.Namespace, pod.Name, ns, name, c.GlobalNamespaces)
}
