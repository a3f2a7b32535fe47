package cniinstall

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// DefaultServiceAccountDir is where a pod's projected service-account token and CA are.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// thinKubeconfig builds the thin plugin's kubeconfig from the pod's service account: token
// and CA are embedded, not referenced, because the plugin runs on the host, where the pod's
// projected volume is not at that path.
func thinKubeconfig(server, saDir string) ([]byte, error) {
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("thin kubeconfig: service-account token: %w", err)
	}
	token = bytes.TrimSpace(token)
	if len(token) == 0 {
		return nil, fmt.Errorf("thin kubeconfig: service-account token %s is empty", filepath.Join(saDir, "token"))
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("thin kubeconfig: service-account CA: %w", err)
	}
	c := clientcmdapi.NewConfig()
	c.Clusters["cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	c.AuthInfos["multinet"] = &clientcmdapi.AuthInfo{Token: string(token)}
	c.Contexts["multinet"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "multinet"}
	c.CurrentContext = "multinet"
	b, err := clientcmd.Write(*c)
	if err != nil {
		return nil, fmt.Errorf("thin kubeconfig: %w", err)
	}
	return b, nil
}

// writeIfChanged writes b to path (atomically, 0600: it holds a token) unless it holds b
// already, and reports whether it wrote.
func writeIfChanged(path string, b []byte, perm os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == perm {
			return false, nil
		}
	}
	if err := fsutil.WriteFileAtomic(path, b, perm); err != nil {
		return false, err
	}
	return true, nil
}
