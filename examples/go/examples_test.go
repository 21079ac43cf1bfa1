// Package examples holds the tests of the Go examples: math_parent against
// the Go math_worker and against the C one, and the C parent against the Go
// worker.
package examples

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

const wantOutput = `add(1, 2) = 3
multiply(6, 7) = 42
factorial(10) = 3628800
factorial(-1) failed: ValueError: factorial of a negative number
echo("héllo ✓") = "héllo ✓"
transport: link
`

// The C examples, built by `make build` (CMake) into build/.
var (
	cWorker = filepath.Join("..", "..", "build", "math_worker")
	cParent = filepath.Join("..", "..", "build", "math_parent")
)

var (
	buildOnce          sync.Once
	builtDir, buildErr = "", error(nil)
)

// build compiles the two Go examples (once per test run).
func build(t *testing.T) (parent, worker string) {
	t.Helper()
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "multifrost-go-examples-")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"math_parent", "math_worker"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(builtDir, name), "./"+name)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(builtDir, "math_parent"), filepath.Join(builtDir, "math_worker")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

func runParent(t *testing.T, parent string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, parent, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", parent, args, err, out, stderr.String())
	}
	if string(out) != wantOutput {
		t.Errorf("output of %s %v:\n%s\nwant:\n%s", parent, args, out, wantOutput)
	}
}

// The absolute path of a C example program (`role` is "worker" or
// "parent"); the test is skipped when it is not built.
func cProgram(t *testing.T, path, role string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Skipf("the C math %s %s is not built (run `make build` first): %v", role, abs, err)
	}
	return abs
}

func TestMathParentWithGoWorker(t *testing.T) {
	parent, worker := build(t)
	runParent(t, parent, worker)
}

func TestMathParentWithCWorker(t *testing.T) {
	worker := cProgram(t, cWorker, "worker")
	parent, _ := build(t)
	runParent(t, parent, worker)
}

// The C math_parent spawns the Go math_worker: a Go worker answers any
// parent that speaks the protocol.
func TestCMathParentWithGoWorker(t *testing.T) {
	cparent := cProgram(t, cParent, "parent")
	_, worker := build(t)
	out, err := exec.Command(cparent, worker).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", cparent, worker, err, out)
	}
	for _, want := range []string{
		"add[1, 2] = 3\n",
		"multiply[6, 7] = 42\n",
		"factorial[10] = 3628800\n",
		"factorial[-1] failed: MF_ERR_REMOTE: ValueError: factorial of a negative number\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("C parent output lacks %q:\n%s", want, out)
		}
	}
	// A Go map has no key order, so the echoed object is compared as a value.
	var echoed any
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "echo[") {
			if _, after, ok := strings.Cut(line, "] = "); ok {
				if err := json.Unmarshal([]byte(after), &echoed); err != nil {
					t.Fatalf("echo result is not JSON: %v: %q", err, after)
				}
			}
		}
	}
	want := map[string]any{"text": "héllo ✓", "list": []any{1.0, 2.5, nil, true}}
	if !reflect.DeepEqual(echoed, want) {
		t.Errorf("echo came back as %#v, want %#v:\n%s", echoed, want, out)
	}
}

// The Go math worker in connect mode, reached by service id.
func TestMathWorkerConnectMode(t *testing.T) {
	_, worker := build(t)
	t.Setenv("HOME", t.TempDir()) // a private service registry; the worker inherits it
	id := fmt.Sprintf("go-example-math-%d", os.Getpid())
	cmd := exec.Command(worker, id)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("math_worker after SIGINT: %v", err)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := multifrost.Connect(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var n int64
	if err := p.Call(ctx, "multiply", &n, 1<<31, 1<<31); err != nil || n != 1<<62 {
		t.Errorf("multiply(2^31, 2^31) = %d, %v", n, err)
	}
	var f float64
	if err := p.Call(ctx, "add", &f, 1.5, 2); err != nil || f != 3.5 {
		t.Errorf("add(1.5, 2) = %v, %v", f, err)
	}
	var re *multifrost.RemoteError
	if err := p.Call(ctx, "add", nil, int64(1)<<62, int64(1)<<62); !errors.As(err, &re) ||
		re.Message != "OverflowError: result does not fit in 64 bits" {
		t.Errorf("add overflow: %v", err)
	}
	if err := p.Call(ctx, "factorial", nil, "ten"); !errors.As(err, &re) ||
		!strings.HasPrefix(re.Message, "TypeError: factorial expects (int64)") {
		t.Errorf("factorial(\"ten\"): %v", err)
	}
}

// poolLine checks that out ends with "pool: N workers, pids P1 ... PN" (N
// distinct pids, every process gone once the parent exited) and returns
// what comes before it.
func poolLine(t *testing.T, out string, n int) string {
	t.Helper()
	rest, line, _ := strings.Cut(strings.TrimSuffix(out, "\n"), "\npool: ")
	fields := strings.Fields(strings.TrimPrefix(line, fmt.Sprintf("%d workers, pids", n)))
	seen := map[string]bool{}
	for _, pid := range fields {
		seen[pid] = true
		if _, err := os.Stat("/proc/" + pid); err == nil {
			t.Errorf("worker %s is still there after the parent exited", pid)
		}
	}
	if !strings.HasPrefix(line, fmt.Sprintf("%d workers, pids ", n)) || len(fields) != n || len(seen) != n {
		t.Errorf("no line \"pool: %d workers, pids ...\" with %d distinct pids at the end:\n%s", n, n, out)
	}
	return rest + "\n"
}

func TestMathParentPoolOfGoWorkers(t *testing.T) {
	parent, worker := build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, parent, "--workers", "3", worker)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s --workers 3: %v\n%s\n%s", parent, err, out, stderr.String())
	}
	if rest := poolLine(t, string(out), 3); rest != wantOutput {
		t.Errorf("output of %s --workers 3 %s:\n%s\nwant:\n%s", parent, worker, rest, wantOutput)
	}
}

// The C math_parent with a pool of Go math workers.
func TestCMathParentPoolOfGoWorkers(t *testing.T) {
	cparent := cProgram(t, cParent, "parent")
	_, worker := build(t)
	out, err := exec.Command(cparent, "--workers", "2", worker).Output()
	if err != nil {
		t.Fatalf("%s --workers 2 %s: %v\n%s", cparent, worker, err, out)
	}
	// The C parent prints its stats after the pool's line.
	text := string(out)
	at := strings.Index(text, "\nstats: ")
	if at < 0 {
		t.Fatalf("no stats line:\n%s", text)
	}
	before := poolLine(t, text[:at+1], 2)
	if !strings.Contains(before, "add[1, 2] = 3\n") {
		t.Errorf("C parent output lacks its calls:\n%s", text)
	}
}
