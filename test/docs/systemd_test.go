package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// unitFile is a "# PATH" line that starts a unit file in a README block.
var unitFile = regexp.MustCompile(`(?m)^# (\S+/systemd/(?:user|system)/\S+)$`)

// readmeUnits returns the systemd unit files README.md's ini blocks show,
// by the path their first line gives.
func readmeUnits(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	units := map[string]string{}
	for _, block := range strings.Split(string(data), "```ini\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		starts := unitFile.FindAllStringSubmatchIndex(block, -1)
		for i, m := range starts {
			end := len(block)
			if i+1 < len(starts) {
				end = starts[i+1][0]
			}
			units[block[m[2]:m[3]]] = block[m[1]:end]
		}
	}
	return units
}

// TestSystemdUnitsInTheREADMEVerify: the user units (socket activation)
// and the system unit README.md shows pass systemd-analyze verify without
// a warning, with moat's path being where it was built.
func TestSystemdUnitsInTheREADMEVerify(t *testing.T) {
	analyze := testutil.SystemdTool(t, "systemd-analyze")
	units := readmeUnits(t)
	for _, want := range []string{"~/.config/systemd/user/moat.socket", "~/.config/systemd/user/moat.service", "/etc/systemd/system/moat.service"} {
		if _, ok := units[want]; !ok {
			t.Fatalf("README.md shows no %s; it shows %v", want, units)
		}
	}
	moat := testutil.BuildMoat(t)
	for _, scope := range []string{"user", "system"} {
		t.Run(scope, func(t *testing.T) {
			dir, home := t.TempDir(), t.TempDir()
			var files []string
			for path, text := range units {
				if !strings.Contains(path, "/systemd/"+scope+"/") {
					continue
				}
				text = strings.NewReplacer("%h/go/bin/moat", moat, "/usr/local/bin/moat", moat).Replace(text)
				f := filepath.Join(dir, filepath.Base(path))
				if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			args := []string{"verify"}
			if scope == "user" {
				args = append(args, "--user")
			}
			cmd := exec.Command(analyze, append(args, files...)...)
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "XDG_RUNTIME_DIR=" + home}
			out, err := cmd.CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, testutil.Tail(string(out), 4096))
			}
		})
	}
}
