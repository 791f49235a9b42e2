package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCorePackagesImportNoDriver holds the layout rule: only the folder named after a technology
// imports its driver, so the domain and the ports stay testable and swappable.
func TestCorePackagesImportNoDriver(t *testing.T) {
	drivers := []string{"github.com/IBM/sarama", "github.com/twmb/franz-go", "go.mongodb.org/mongo-driver",
		"modernc.org/sqlite", "github.com/microsoft/go-mssqldb", "github.com/jmoiron/sqlx", "github.com/FerretDB"}
	for _, pkg := range []string{"./write", "./read", "./projector"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, d := range drivers {
				if strings.HasPrefix(dep, d) {
					t.Errorf("%s imports the driver package %s", pkg, dep)
				}
			}
		}
	}
}

// TestBinaryDoesNotLinkFerretDB: FerretDB is a test dependency of write/mongo only.
func TestBinaryDoesNotLinkFerretDB(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps .: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "FerretDB") {
		t.Fatal("the postgate binary links FerretDB")
	}
}
