//go:build e2e_cluster

package cluster

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	dpv1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
)

func TestPodOnClusterNetwork(t *testing.T) {
	c := clustertest.Connect(t)
	c.CreatePod(t, "default", "eth0-only")
	pod := c.WaitRunning(t, "default", "eth0-only", 90*time.Second)

	_, podNet, _ := net.ParseCIDR("10.244.0.0/24")
	if !podNet.Contains(net.ParseIP(pod.Status.PodIP)) {
		t.Fatalf("pod IP %s not from the bridge conflist's range %s", pod.Status.PodIP, podNet)
	}
	netns := clustertest.PodNetNS(t, "eth0", pod.Status.PodIP)
	err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().OperState != netlink.OperUp && l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("eth0 in the pod is down")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lease := filepath.Join(c.IPAMDir(), "cbr0", pod.Status.PodIP)
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("host-local has no lease for the pod IP: %v", err)
	}

	c.DeletePod(t, "default", "eth0-only")
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Errorf("pod deleted but its IP lease %s is still there (CNI DEL did not release it): %v", lease, err)
	}
	if _, err := os.Stat(netns.Path()); err == nil {
		t.Errorf("pod deleted but its netns %s remains", netns.Path())
	}
}

func TestKubeletSocketsAnswer(t *testing.T) {
	c := clustertest.Connect(t)
	c.CreatePod(t, "default", "listed")
	c.WaitRunning(t, "default", "listed", 90*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.PodResources(t).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		t.Fatalf("PodResources List on %s: %v", c.PodResourcesSocket(), err)
	}
	found := false
	for _, p := range resp.PodResources {
		if p.Namespace == "default" && p.Name == "listed" {
			found = true
		}
	}
	if !found {
		t.Errorf("PodResources List does not return the running pod: %v", resp.PodResources)
	}

	// The registration socket is where our device plugin will register. An unsupported API
	// version must come back as the kubelet's own refusal, which proves it is listening.
	sock := filepath.Join(c.DevicePluginDir(), "kubelet.sock")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = dpv1beta1.NewRegistrationClient(conn).Register(ctx, &dpv1beta1.RegisterRequest{Version: "v0alpha", Endpoint: "none.sock", ResourceName: "example.com/none"})
	if err == nil || !strings.Contains(err.Error(), "v0alpha") {
		t.Fatalf("Register with a bad version on %s: err = %v, want the kubelet's refusal naming the version", sock, err)
	}
}
