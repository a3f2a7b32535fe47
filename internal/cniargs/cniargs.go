// Package cniargs reads CNI_ARGS ("K1=V1;K2=V2"), the one way every multinet plugin and the
// agent read it. Keys are trimmed; values may hold '=' and ',' (the annotation syntax the
// standalone mode passes through them).
package cniargs

import "strings"

// Parse returns every key; a key given twice keeps its last value, as written.
func Parse(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) != "" {
			m[strings.TrimSpace(k)] = v
		}
	}
	return m
}

// Get returns the first value of key, trimmed ("" when absent). Unknown keys are ignored:
// runtimes pass K8S_POD_NAME and friends to every plugin.
func Get(s, key string) string {
	for _, kv := range strings.Split(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Pod is the pod the runtime names ("namespace/name"; "" without K8S_POD_NAME).
func Pod(s string) string {
	m := Parse(s)
	if m["K8S_POD_NAME"] == "" {
		return ""
	}
	return m["K8S_POD_NAMESPACE"] + "/" + m["K8S_POD_NAME"]
}
