// Package cniwire is what the thick-mode shim and the node agent say to each other over the
// agent's unix socket: one JSON request (the CNI environment and stdin), the write side closed,
// one JSON response. It has no Kubernetes imports: the shim stays small.
package cniwire

import (
	"encoding/json"
	"fmt"
	"io"
	"net"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultSocket is where the agent listens (0600 in a 0700 dir: root on the node only).
const DefaultSocket = "/run/multinet/multinet.sock"

// MaxRequest bounds what the agent reads from one connection (a netconf is a few KiB; the
// runtime's GC valid-attachments list of a full node stays far below).
const MaxRequest = 16 << 20

// Request is one CNI call as the runtime made it to the shim.
type Request struct {
	// Env holds CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH and
	// MULTINET_DEPTH, as the shim found them.
	Env   map[string]string `json:"env"`
	Stdin []byte            `json:"stdin"`
}

// Response is what the plugin would have printed: Result on success (ADD's result at the
// netconf's cniVersion; empty for DEL, CHECK, STATUS, GC), Error on failure.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// EnvKeys are the variables the shim forwards.
var EnvKeys = []string{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "MULTINET_DEPTH"}

// Call sends req on conn and reads the response.
func Call(conn *net.UnixConn, req *Request) (*Response, error) {
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("send to multinetd: %w", err)
	}
	if err := conn.CloseWrite(); err != nil {
		return nil, fmt.Errorf("send to multinetd: %w", err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return nil, fmt.Errorf("read multinetd's answer: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("multinetd closed the connection without an answer")
	}
	var resp Response
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("multinetd's answer: %w", err)
	}
	return &resp, nil
}
