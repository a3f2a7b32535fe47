package vhostuser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Port is what the plugin asks OVS for, and what CHECK compares with what OVS has.
type Port struct {
	Name       string
	Bridge     string
	ServerPath string
	VLAN       int // 0: none
	MTU        int // 0: none requested
	IDs        map[string]string
}

// ovs runs ovs-vsctl against one OVSDB. Each call is one OVSDB transaction; without --no-wait
// ovs-vsctl returns once ovs-vswitchd has applied it, so the port's error column is meaningful.
type ovs struct {
	bin     string
	db      string
	timeout time.Duration
}

func newOVS(bin, db string, timeout time.Duration) (*ovs, error) {
	if bin == "" {
		bin = "ovs-vsctl"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("ovs-vsctl not found (install openvswitch-switch or set MULTINET_OVS_VSCTL): %w", err)
	}
	return &ovs{bin: path, db: db, timeout: timeout}, nil
}

func (o *ovs) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout+2*time.Second)
	defer cancel()
	full := append([]string{"--db=" + o.db, "--timeout=" + strconv.Itoa(int(o.timeout.Seconds()))}, args...)
	cmd := exec.CommandContext(ctx, o.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("ovs-vsctl %s: %s", strings.Join(args, " "), msg)
	}
	return stdout.String(), nil
}

// quote makes a value safe for ovs-vsctl's column syntax.
func quote(s string) string { return strconv.Quote(s) }

// addPort replaces any port of that name (a leftover of this slot's earlier owner) and adds the
// new one, in one transaction: OVS has either the old state or the whole new port.
func (o *ovs) addPort(p Port) error {
	args := []string{"--", "--if-exists", "del-port", p.Name, "--", "add-port", p.Bridge, p.Name}
	if p.VLAN != 0 {
		args = append(args, "tag="+strconv.Itoa(p.VLAN))
	}
	args = append(args, "--", "set", "Interface", p.Name, "type=dpdkvhostuserclient",
		"options:vhost-server-path="+quote(p.ServerPath))
	if p.MTU != 0 {
		args = append(args, "mtu_request="+strconv.Itoa(p.MTU))
	}
	for _, k := range sortedKeys(p.IDs) {
		args = append(args, "external_ids:"+k+"="+quote(p.IDs[k]))
	}
	_, err := o.run(args...)
	return err
}

// delPort removes a port; one that is not there is fine (DEL is idempotent).
func (o *ovs) delPort(name string) error {
	_, err := o.run("--if-exists", "del-port", name)
	return err
}

// errNoPort is returned by getPort when OVS has no such interface.
var errNoPort = errors.New("no such port")

// getPort reads back a port's settings and the state ovs-vswitchd reports for it, in one call.
func (o *ovs) getPort(name string) (*Port, string, int, error) {
	out, err := o.run("--", "get", "Interface", name, "type",
		"--", "get", "Interface", name, "options",
		"--", "get", "Interface", name, "mtu_request",
		"--", "get", "Port", name, "tag",
		"--", "port-to-br", name,
		"--", "get", "Interface", name, "error",
		"--", "get", "Interface", name, "ofport",
		"--", "get", "Interface", name, "external_ids")
	if err != nil {
		if strings.Contains(err.Error(), "no row \""+name+"\"") || strings.Contains(err.Error(), "no port named "+name) {
			return nil, "", 0, errNoPort
		}
		return nil, "", 0, err
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 8 {
		return nil, "", 0, fmt.Errorf("ovs-vsctl: port %s: unexpected output %q", name, out)
	}
	if typ := lines[0]; typ != "dpdkvhostuserclient" {
		return nil, "", 0, fmt.Errorf("port %s: type is %q, not dpdkvhostuserclient", name, typ)
	}
	p := &Port{Name: name, Bridge: lines[4]}
	opts, err := parseMap(lines[1])
	if err != nil {
		return nil, "", 0, fmt.Errorf("port %s: options: %w", name, err)
	}
	p.ServerPath = opts["vhost-server-path"]
	if p.MTU, err = parseOptInt(lines[2]); err != nil {
		return nil, "", 0, fmt.Errorf("port %s: mtu_request: %w", name, err)
	}
	if p.VLAN, err = parseOptInt(lines[3]); err != nil {
		return nil, "", 0, fmt.Errorf("port %s: tag: %w", name, err)
	}
	if p.IDs, err = parseMap(lines[7]); err != nil {
		return nil, "", 0, fmt.Errorf("port %s: external_ids: %w", name, err)
	}
	ofport, err := parseOptInt(lines[6])
	if err != nil {
		return nil, "", 0, fmt.Errorf("port %s: ofport: %w", name, err)
	}
	perr := ""
	if e := lines[5]; e != "[]" {
		perr, _ = strconv.Unquote(e)
		if perr == "" {
			perr = e
		}
	}
	return p, perr, ofport, nil
}

// bridgeExists reports whether OVS has the bridge.
func (o *ovs) bridgeExists(br string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout+2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.bin, "--db="+o.db, "--timeout="+strconv.Itoa(int(o.timeout.Seconds())), "br-exists", br)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		return false, nil
	}
	return false, fmt.Errorf("ovs-vsctl br-exists %s: %s", br, strings.TrimSpace(stderr.String()+" "+err.Error()))
}

// parseOptInt reads an optional integer column: "[]" (unset) is 0.
func parseOptInt(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "[]" || s == "" {
		return 0, nil
	}
	return strconv.Atoi(s)
}

// parseMap reads ovs-vsctl's map syntax: {k=v, k2="quoted, value"}.
func parseMap(s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("not a map: %q", s)
	}
	s = s[1 : len(s)-1]
	out := map[string]string{}
	for len(s) > 0 {
		k, rest, err := token(s)
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(rest, "=") {
			return nil, fmt.Errorf("map entry %q: no '='", k)
		}
		v, rest, err := token(rest[1:])
		if err != nil {
			return nil, err
		}
		out[k] = v
		rest = strings.TrimPrefix(rest, ",")
		s = strings.TrimLeft(rest, " ")
	}
	return out, nil
}

// token reads one bare or double-quoted word.
func token(s string) (string, string, error) {
	if strings.HasPrefix(s, `"`) {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '"':
				v, err := strconv.Unquote(s[:i+1])
				return v, s[i+1:], err
			}
		}
		return "", "", fmt.Errorf("unterminated string %q", s)
	}
	i := strings.IndexAny(s, "=,")
	if i < 0 {
		i = len(s)
	}
	return s[:i], s[i:], nil
}
