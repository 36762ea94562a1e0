package esoxcli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// modulePath is esox's module.
const modulePath = "github.com/esox-go/esox"

// buildVersion returns esox's module version in this binary ("(devel)"
// for a build from a checkout) and its VCS revision when known.
func buildVersion() (version, revision string) {
	version = "(unknown)"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, ""
	}
	switch {
	case bi.Main.Path == modulePath:
		version = bi.Main.Version
	default:
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				version = d.Version
			}
		}
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision
}

func (e *env) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print esox's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v, rev := buildVersion()
			if e.json {
				return e.writeJSON(struct {
					Version   string `json:"version"`
					Revision  string `json:"revision,omitempty"`
					GoVersion string `json:"go_version"`
				}{v, rev, runtime.Version()})
			}
			s := "esox " + v
			if rev != "" {
				s += " (" + rev + ")"
			}
			_, err := fmt.Fprintf(e.io.Stdout, "%s %s %s/%s\n", s, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
