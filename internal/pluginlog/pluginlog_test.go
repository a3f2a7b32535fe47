package pluginlog

import (
	"log/slog"
	"testing"
)

func TestLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "Verbose": slog.LevelDebug, "info": slog.LevelInfo,
		"ERROR": slog.LevelError, "panic": slog.LevelError, "": slog.LevelWarn, "warning": slog.LevelWarn} {
		if got := Level(in); got != want {
			t.Errorf("Level(%q) = %v, want %v", in, got, want)
		}
	}
}
