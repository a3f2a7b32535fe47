// Command clusterctl does the few things the e2e/cluster scripts need from the API server
// without kubectl: wait for the node, apply manifests, build and import images, delete pods.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/multinet-io/multinet/internal/ociimage"
)

const usage = `usage:
  clusterctl wait-node KUBECONFIG NODE TIMEOUT
  clusterctl apply KUBECONFIG FILE...
  clusterctl delete-pods KUBECONFIG TIMEOUT
  clusterctl token KUBECONFIG NAMESPACE/SERVICEACCOUNT TTL [NODE]   (prints a token, TokenRequest API; bound to NODE if given)
  clusterctl image BINARY ENTRYPOINT TAG OUT.tar
  clusterctl image-files TAG OUT.tar ENTRYPOINT HOSTPATH[=IMAGEPATH]...   (host files, dirs and the libraries they need)`

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
	if args[0] == "image-files" && len(args) >= 5 {
		return imageFiles(args[1], args[2], args[3], args[4:])
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
		// A controller may create the object between our Get and Create (the
		// controller-manager makes every namespace's default ServiceAccount): then update it.
		for try := 0; ; try++ {
			var cur *unstructured.Unstructured
			if cur, err = ri.Get(ctx, obj.GetName(), metav1.GetOptions{}); err == nil {
				obj.SetResourceVersion(cur.GetResourceVersion())
				_, err = ri.Update(ctx, &obj, metav1.UpdateOptions{})
			} else {
				_, err = ri.Create(ctx, &obj, metav1.CreateOptions{})
			}
			if try < 3 && (apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) {
				continue
			}
			break
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
// and waits until they are gone: first the workloads, then DaemonSet pods (a node agent that
// serves the workloads' CNI DEL goes last).
func deletePods(cs kubernetes.Interface, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, agents := range []bool{false, true} {
		if err := deletePodsOf(ctx, cs, agents); err != nil {
			return fmt.Errorf("%w after %s", err, timeout)
		}
	}
	return nil
}

// deletePodsOf deletes the DaemonSets' pods (agents) or all the others, and waits for them.
func deletePodsOf(ctx context.Context, cs kubernetes.Interface, agents bool) error {
	grace := int64(1)
	mine := func(p *corev1.Pod) bool {
		ds := false
		for _, o := range p.OwnerReferences {
			ds = ds || o.Kind == "DaemonSet"
		}
		return ds == agents
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		if mine(&p) {
			_ = cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		}
	}
	for {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		left := 0
		if err == nil {
			for _, p := range pods.Items {
				if mine(&p) {
					left++
				}
			}
			if left == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d pods still present", left)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// image writes a one-layer image in the `docker save` layout that `ctr images import` takes:
// the binary at its path inside the layer, a config naming the entrypoint, a manifest.
func image(binary, entrypoint, tag, out string) error {
	l := newLayer()
	if err := l.addAs(binary, entrypoint); err != nil {
		return err
	}
	return l.write(tag, []string{entrypoint}, out)
}

// imageFiles writes an image of host files at their own paths (HOST) or elsewhere
// (HOST=IMAGE): directories whole, symlinks as symlinks along with what they point to, and
// every shared library an ELF file needs (as ldd resolves it on this host), so a dynamically
// linked program from the host's packages runs in the container as it runs here.
func imageFiles(tag, out, entrypoint string, specs []string) error {
	l := newLayer()
	for _, spec := range specs {
		host, img, renamed := strings.Cut(spec, "=")
		var err error
		if renamed {
			err = l.addAs(host, img)
		} else {
			err = l.addPath(host)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
	}
	return l.write(tag, []string{entrypoint}, out)
}

// layer is an image being filled from host paths, with the libraries they need.
type layer struct {
	im      *ociimage.Image
	lddDone map[string]bool
}

func newLayer() *layer { return &layer{im: ociimage.New(), lddDone: map[string]bool{}} }

// addAs puts a host file (symlinks followed) at img, with the libraries it needs.
func (l *layer) addAs(host, img string) error {
	fi, err := os.Stat(host)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", host)
	}
	if err := l.im.AddFile(img, host, fi.Mode().Perm()); err != nil {
		return err
	}
	return l.libs(host)
}

// addPath puts a host path into the image at the same path, resolving it component by
// component so that every symlink on the way (Debian's /lib -> usr/lib, a library's soname
// links) is in the image too and resolves there as on the host.
func (l *layer) addPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s: want an absolute path", p)
	}
	return l.addResolved(filepath.Clean(p), 0, true)
}

// addResolved adds p and the symlinks on its way; with whole, a directory at p comes with
// all it holds, else only as a directory (a symlink's target on the way to something else).
func (l *layer) addResolved(p string, depth int, whole bool) error {
	if depth > 40 {
		return fmt.Errorf("%s: too many levels of symbolic links", p)
	}
	cur := "/"
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, part := range parts {
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		img := next
		last := i == len(parts)-1
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			l.im.AddSymlink(img, target)
			abs := target
			if !filepath.IsAbs(abs) {
				abs = filepath.Join(cur, target)
			}
			if err := l.addResolved(abs, depth+1, whole && last); err != nil {
				return fmt.Errorf("%s -> %s: %w", next, target, err)
			}
			if last {
				return nil
			}
			if cur, err = filepath.EvalSymlinks(next); err != nil {
				return err
			}
		case fi.IsDir():
			if _, dir := l.im.Has(img); !dir {
				l.im.AddDir(img, fi.Mode().Perm())
			}
			if last && whole {
				return l.addDir(next)
			}
			cur = next
		case fi.Mode().IsRegular() && last:
			if ok, _ := l.im.Has(img); ok {
				return nil
			}
			if err := l.im.AddFile(img, next, fi.Mode().Perm()); err != nil {
				return err
			}
			return l.libs(next)
		default:
			return fmt.Errorf("%s: not a directory, regular file or symlink", next)
		}
	}
	return nil
}

// addDir adds everything under a host directory.
func (l *layer) addDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := l.addResolved(filepath.Join(dir, e.Name()), 0, true); err != nil {
			return err
		}
	}
	return nil
}

// libs adds the shared libraries an ELF file needs, as this host's ldd resolves them (the
// whole closure: ldd lists indirect needs too). Files that are not dynamic ELF need nothing.
func (l *layer) libs(host string) error {
	if l.lddDone[host] {
		return nil
	}
	l.lddDone[host] = true
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	magic := make([]byte, 4)
	_, err = f.Read(magic)
	f.Close()
	if err != nil || string(magic) != "\x7fELF" {
		return nil
	}
	out, err := exec.Command("ldd", host).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") || strings.Contains(string(out), "statically linked") {
			return nil
		}
		return fmt.Errorf("ldd %s: %v: %s", host, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.Contains(line, "=> not found") {
			return fmt.Errorf("%s needs %s, which this host does not have", host, strings.Fields(line)[0])
		}
		lib := line
		if _, after, ok := strings.Cut(line, "=>"); ok {
			lib = strings.TrimSpace(after)
		}
		lib, _, _ = strings.Cut(lib, " (")
		if !strings.HasPrefix(lib, "/") {
			continue // linux-vdso and the like: the kernel's
		}
		if err := l.addPath(lib); err != nil {
			return fmt.Errorf("%s needs %s: %w", host, lib, err)
		}
	}
	return nil
}

// write writes the image: the layer, a config naming the entrypoint, a manifest tagged tag.
func (l *layer) write(tag string, entrypoint []string, out string) error {
	l.im.Entrypoint = entrypoint
	_, err := l.im.Write(out, tag)
	return err
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
