// Command multinet-shim is the CNI plugin the thick-mode conf names ("type": "multinet-shim"):
// it forwards the CNI call to the node agent multinetd over its unix socket and prints the
// answer. ADD, CHECK and STATUS wait for the agent (bounded: "agentWait" in the conf, default
// 45 s) when it is not up yet; DEL never depends on it: when the agent does not answer, the shim
// runs the DEL itself from the on-disk delegate cache. It imports nothing of Kubernetes, so its
// exec costs about what a small plugin's does.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/internal/fsutil"
	"github.com/multinet-io/multinet/meta/delcache"
)

// DefaultAgentWait is how long ADD, CHECK and STATUS wait for the agent: long enough for it to
// start after a reboot (Multus #1165, #1387: pods started without their secondary interfaces),
// short enough that the kubelet retries within its own timeouts.
const DefaultAgentWait = 45 * time.Second

// conf is what the shim reads of the netconf; the agent reads all of it.
type conf struct {
	CNIVersion string `json:"cniVersion"`
	Socket     string `json:"socket,omitempty"`
	// AgentWait is a Go duration ("45s").
	AgentWait  string `json:"agentWait,omitempty"`
	BinDir     string `json:"binDir,omitempty"`
	CacheDir   string `json:"cacheDir,omitempty"`
	NetworkDir string `json:"networkDir,omitempty"`
}

func loadConf(stdin []byte) (*conf, time.Duration, error) {
	c := &conf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, 0, fmt.Errorf("multinet-shim: netconf: %w", err)
	}
	if c.Socket == "" {
		c.Socket = cniwire.DefaultSocket
	}
	if c.CacheDir == "" {
		c.CacheDir = delcache.DefaultCacheDir
	}
	wait := DefaultAgentWait
	if c.AgentWait != "" {
		d, err := time.ParseDuration(c.AgentWait)
		if err != nil || d < 0 {
			return nil, 0, fmt.Errorf("multinet-shim: netconf: agentWait %q: want a duration like 45s", c.AgentWait)
		}
		wait = d
	}
	return c, wait, nil
}

func request(args *skel.CmdArgs, cmd string) *cniwire.Request {
	env := map[string]string{}
	for _, k := range cniwire.EnvKeys {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	env["CNI_COMMAND"] = cmd
	return &cniwire.Request{Env: env, Stdin: args.StdinData}
}

func dial(socket string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// dialWait retries until the agent accepts or wait is over.
func dialWait(socket string, wait time.Duration) (*net.UnixConn, error) {
	deadline := time.Now().Add(wait)
	said := false
	for {
		c, err := dial(socket)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("multinet-shim: multinetd did not answer on %s within %s: %w", socket, wait, err)
		}
		if !said {
			fmt.Fprintf(os.Stderr, "multinet-shim: waiting up to %s for multinetd on %s: %v\n", wait, socket, err)
			said = true
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// forward runs a call that needs the agent.
func forward(args *skel.CmdArgs, cmd string) ([]byte, error) {
	c, wait, err := loadConf(args.StdinData)
	if err != nil {
		return nil, err
	}
	conn, err := dialWait(c.Socket, wait)
	if err != nil {
		return nil, &types.Error{Code: types.ErrTryAgainLater, Msg: err.Error()}
	}
	defer conn.Close()
	resp, err := cniwire.Call(conn, request(args, cmd))
	if err != nil {
		return nil, &types.Error{Code: types.ErrTryAgainLater, Msg: fmt.Sprintf("multinet-shim: %s: %v", cmd, err)}
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}

func add(args *skel.CmdArgs) error {
	out, err := forward(args, "ADD")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

// del asks the agent, and deletes by itself when the agent cannot be reached or dies before
// answering: pod deletion must never wait for the agent, and nothing may leak meanwhile.
func del(args *skel.CmdArgs) error {
	c, _, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	conn, err := dial(c.Socket)
	if err == nil {
		resp, cerr := cniwire.Call(conn, request(args, "DEL"))
		conn.Close()
		if cerr == nil {
			if resp.Error != nil {
				return resp.Error
			}
			return nil
		}
		err = cerr
	}
	return fallbackDel(c, args, err)
}

func depth() int { return delcache.ParseDepth(os.Getenv(delcache.EnvDepth)) }

// fallbackDel is the meta-plugin's DEL without the API: the cached delegates' DEL, exec'd.
// Only network-status is left as it is (the pod is going away; the agent writes it on ADD).
func fallbackDel(c *conf, args *skel.CmdArgs, why error) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("plugin", "multinet-shim", "container", args.ContainerID)
	d := depth()
	if d > 0 {
		log.Error("DEL as a delegate of multinet: nothing to do", delcache.EnvDepth, d)
		return nil
	}
	log.Warn("multinetd did not answer DEL: deleting from the delegate cache", "socket", c.Socket, "err", why.Error())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exec := delcache.DepthExec{Exec: delcache.DefaultExec(), Depth: d}
	if _, err := delcache.Del(ctx, delcache.BinPath(c.BinDir, args.Path), exec, c.CacheDir, args.ContainerID, args.Netns, log); err != nil {
		return fmt.Errorf("multinet-shim: DEL without multinetd (%v): %w", why, err)
	}
	if c.NetworkDir != "" {
		fsutil.Remove(filepath.Join(c.CacheDir, "status", args.ContainerID+".json"))
	}
	return nil
}

func check(args *skel.CmdArgs) error  { _, err := forward(args, "CHECK"); return err }
func status(args *skel.CmdArgs) error { _, err := forward(args, "STATUS"); return err }
func gc(args *skel.CmdArgs) error     { _, err := forward(args, "GC"); return err }

// Versions are the meta-plugin's (meta.Versions; the shim cannot import meta).
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: del, Check: check, Status: status, GC: gc},
		Versions, "multinet-shim: forwards CNI calls to multinetd (thick mode)")
}
