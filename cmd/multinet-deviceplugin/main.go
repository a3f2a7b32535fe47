// Command multinet-deviceplugin advertises a node's SR-IOV VFs, PCI network devices and
// vhost-user socket slots to kubelet, from the upstream SR-IOV device plugin's config.json.
// It is a thin shell over package deviceplugin: SIGHUP rescans and reloads, SIGTERM stops.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/pci"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("multinet-deviceplugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "/etc/pcidp/config.json", "resource pools (upstream SR-IOV device plugin config.json format)")
	fs.StringVar(cfg, "config-file", "/etc/pcidp/config.json", "alias of --config (upstream's flag name)")
	sysfs := fs.String("sysfs-root", pci.DefaultSysfsRoot, "sysfs mount to read devices from")
	dir := fs.String("device-plugin-dir", deviceplugin.DefaultPluginDir, "kubelet's device-plugin directory (kubelet.sock and our sockets)")
	interval := fs.Duration("interval", 250*time.Millisecond, "how often sysfs, the config file and kubelet.sock are checked")
	check := fs.Bool("check", false, "validate the config, print the pools it selects on this node, and exit")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	m, err := deviceplugin.New(deviceplugin.Options{ConfigFile: *cfg, SysfsRoot: *sysfs, PluginDir: *dir, Interval: *interval, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "multinet-deviceplugin: %v\n", err)
		return 1
	}
	if *check {
		for _, p := range m.Status() {
			fmt.Fprintf(os.Stdout, "%s: %d devices %v\n", p.Resource, len(p.Devices), p.Devices)
		}
		refused := m.Refused()
		for _, r := range refused {
			fmt.Fprintf(os.Stdout, "%s: refused: %s\n", r.Resource, r)
		}
		if len(refused) > 0 {
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := m.Reload(); err != nil {
				log.Error("reload on SIGHUP", "err", err)
			} else if err := m.Rescan(); err != nil {
				log.Error("rescan on SIGHUP", "err", err)
			}
		}
	}()
	log.Info("serving", "config", *cfg, "sysfs", *sysfs, "device-plugin-dir", *dir)
	if err := m.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "multinet-deviceplugin: %v\n", err)
		return 1
	}
	return 0
}
