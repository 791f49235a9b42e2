package mongo_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBinaryDoesNotLinkFerretDB keeps the test server out of what ships: FerretDB may only be
// imported by tests (write/mongo/mongotest), never by the postgate binary (the module root) nor
// by this adapter.
func TestBinaryDoesNotLinkFerretDB(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	t.Parallel()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	for _, pkg := range []string{".", "./write/mongo"} {
		cmd := exec.Command("go", "list", "-deps", pkg)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			if pkg == "." && strings.Contains(stderr, "no Go files") {
				// The binary's main package does not exist yet; the adapter is still checked.
				t.Logf("go list -deps .: no main package yet")
				continue
			}
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/FerretDB/") {
				t.Errorf("%s depends on %s: FerretDB must stay in tests", pkg, dep)
			}
		}
	}
}
