// Command clusterctl does the few things the e2e/cluster scripts need from the API server
// without kubectl: wait for the node, apply manifests, build and import images, delete pods.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const usage = `usage:
  clusterctl wait-node KUBECONFIG NODE TIMEOUT
  clusterctl apply KUBECONFIG FILE...
  clusterctl delete-pods KUBECONFIG TIMEOUT
  clusterctl token KUBECONFIG NAMESPACE/SERVICEACCOUNT TTL [NODE]   (prints a token, TokenRequest API; bound to NODE if given)
  clusterctl image BINARY ENTRYPOINT TAG OUT.tar`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "clusterctl: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("%s", usage)
	}
	if args[0] == "image" && len(args) == 5 {
		return image(args[1], args[2], args[3], args[4])
	}
	if len(args) < 3 {
		return fmt.Errorf("%s", usage)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", args[1])
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	switch args[0] {
	case "wait-node":
		if len(args) != 4 {
			return fmt.Errorf("%s", usage)
		}
		d, err := time.ParseDuration(args[3])
		if err != nil {
			return err
		}
		return waitNode(cs, args[2], d)
	case "apply":
		dc, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return err
		}
		for _, f := range args[2:] {
			if err := apply(dc, f); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		return nil
	case "token":
		switch len(args) {
		case 4:
			return token(cs, args[2], args[3], "")
		case 5:
			return token(cs, args[2], args[3], args[4])
		}
		return fmt.Errorf("%s", usage)
	case "delete-pods":
		d, err := time.ParseDuration(args[2])
		if err != nil {
			return err
		}
		return deletePods(cs, d)
	}
	return fmt.Errorf("%s", usage)
}

func waitNode(cs kubernetes.Interface, node string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := "not registered"
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return nil
					}
					last = c.Reason + ": " + c.Message
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready after %s (%s)", node, timeout, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// apply creates or updates every object of a multi-document YAML file.
func apply(dc dynamic.Interface, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var obj unstructured.Unstructured
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(j, &obj.Object); err != nil {
			return err
		}
		if obj.Object == nil {
			continue
		}
		gvk := obj.GroupVersionKind()
		res := resourceFor(gvk)
		var ri dynamic.ResourceInterface = dc.Resource(res)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dc.Resource(res).Namespace(ns)
		}
		ctx := context.Background()
		cur, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err == nil {
			obj.SetResourceVersion(cur.GetResourceVersion())
			_, err = ri.Update(ctx, &obj, metav1.UpdateOptions{})
		} else {
			_, err = ri.Create(ctx, &obj, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		if gvk.Kind == "CustomResourceDefinition" {
			if err := waitEstablished(dc, obj.GetName()); err != nil {
				return err
			}
		}
	}
	return nil
}

// resourceFor maps the kinds deploy/ uses to their resources (no discovery round trip).
func resourceFor(gvk schema.GroupVersionKind) schema.GroupVersionResource {
	plural := strings.ToLower(gvk.Kind) + "s"
	switch gvk.Kind {
	case "NetworkAttachmentDefinition":
		plural = "network-attachment-definitions"
	case "CustomResourceDefinition":
		plural = "customresourcedefinitions"
	case "ValidatingAdmissionPolicy":
		plural = "validatingadmissionpolicies"
	case "ClusterRoleBinding", "RoleBinding", "ClusterRole", "Role", "ServiceAccount", "ConfigMap", "Namespace", "Secret", "Pod", "DaemonSet":
		plural = strings.ToLower(gvk.Kind) + "s"
	}
	return gvk.GroupVersion().WithResource(plural)
}

func waitEstablished(dc dynamic.Interface, name string) error {
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for i := 0; i < 100; i++ {
		u, err := dc.Resource(crds).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("CRD %s not Established after 10s", name)
}

// deletePods deletes every pod with a 1 s grace period (so the runtime runs CNI DEL promptly)
// and waits until they are gone.
func deletePods(cs kubernetes.Interface, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	grace := int64(1)
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		_ = cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	}
	for {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pods still present after %s", timeout)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// image writes a one-layer image in the `docker save` layout that `ctr images import` takes:
// the binary at its path inside the layer, a config naming the entrypoint, a manifest.
func image(binary, entrypoint, tag, out string) error {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	dir := strings.TrimPrefix(filepath.Dir(entrypoint), "/")
	if dir != "" && dir != "." {
		if err := lw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	if err := lw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(entrypoint, "/"), Mode: 0o755, Size: int64(len(bin))}); err != nil {
		return err
	}
	lw.Write(bin)
	lw.Close()
	layerSum := sha256.Sum256(layer.Bytes())
	layerID := hex.EncodeToString(layerSum[:])
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{entrypoint}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
	})
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": []string{layerID + "/layer.tar"}}})

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{layerID + "/layer.tar", layer.Bytes()}, {cfgName, cfg}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data))}); err != nil {
			return err
		}
		tw.Write(e.data)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// token asks the TokenRequest API for a service account token, as a node installer does for a
// CNI plugin's kubeconfig (no controller-manager runs here to make legacy token secrets). With a
// node name the token is bound to that Node object, so the API server knows which node it speaks
// for (deploy/rbac's node-scope policy admits only such tokens).
func token(cs kubernetes.Interface, sa, ttl, node string) error {
	ns, name, ok := strings.Cut(sa, "/")
	if !ok {
		return fmt.Errorf("service account %q: want NAMESPACE/NAME", sa)
	}
	d, err := time.ParseDuration(ttl)
	if err != nil {
		return err
	}
	secs := int64(d.Seconds())
	spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}
	if node != "" {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("token for %s bound to node %s: %w", sa, node, err)
		}
		spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID}
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s: %w", sa, err)
	}
	fmt.Println(tr.Status.Token)
	return nil
}
