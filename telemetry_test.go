package esox_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/telemetry"
	"github.com/esox-go/esox/projector"
)

// TestAppTelemetry: the App's TracerProvider and MeterProvider reach the
// store, the runner and the forwarder: an append through the App makes an
// append span, which the projection's batch span links to and the publish
// span is a child of, and each part reports its metrics.
func TestAppTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := registry()
	pub := newPublisher()
	a, err := esox.New(db, reg, esox.Config{
		Schema:         schema,
		Projections:    []projector.Projection{balances(reg, schema)},
		Projector:      projector.Config{PollInterval: 5 * time.Millisecond},
		Publisher:      pub,
		Logger:         quiet(),
		TracerProvider: rec.TracerProvider,
		MeterProvider:  rec.MeterProvider,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, _, _ := run(t, a)
	<-a.Ready()
	res, err := a.Store().Append(testCtx(t), "account-1", eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "a", Amount: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WaitFor(testCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	for !slices.Contains(pub.uuids(), res.EventIDs[0].String()) {
		select {
		case <-pub.got:
		case <-testCtx(t).Done():
			t.Fatal("the event was never published")
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	appended := rec.One(t, "append "+schema+".events")
	var linked bool
	for _, s := range rec.Named("project balances") {
		linked = linked || oteltest.LinksTo(s, appended.SpanContext)
	}
	if !linked {
		t.Errorf("no batch span of the projection links to the append span")
	}
	if publish := rec.One(t, "publish account"); !oteltest.ChildOf(publish, appended.SpanContext) {
		t.Errorf("the publish span is not a child of the append span")
	}
	if got := rec.Value(t, "esox.append.events", telemetry.KeyStreamCategory.String("account"), telemetry.KeyEventType.String("deposited")); got != 1 {
		t.Errorf("esox.append.events = %v, want 1", got)
	}
	if got := rec.Value(t, "esox.projection.events", telemetry.KeyProjection.String("balances"), telemetry.KeyProjectionVersion.Int(1)); got != 1 {
		t.Errorf("esox.projection.events = %v, want 1", got)
	}
}

// corePackages are the packages that may import only OpenTelemetry's API:
// the root package and every package under it that is not an example,
// a test helper or internal to tests.
var corePackages = []string{
	".", "./eventstore", "./eventstore/postgres", "./eventstore/memory", "./aggregate", "./projector", "./forwarder",
}

// TestCoreImportsNoSDK: the core packages (and everything they import)
// depend on OpenTelemetry's API only, never on its SDK, an exporter, or a
// metrics library: the application chooses those (docs/observability.md).
// go.opentelemetry.io/auto/sdk is imported by the API itself (the global
// provider hands spans to it only when OpenTelemetry's eBPF
// auto-instrumentation attaches) and is allowed.
func TestCoreImportsNoSDK(t *testing.T) {
	t.Parallel()
	goCmd := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if _, err := os.Stat(filepath.Join(root, "bin", "go")); err == nil {
			goCmd = filepath.Join(root, "bin", "go")
		}
	}
	out, err := exec.Command(goCmd, append([]string{"list", "-deps"}, corePackages...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	var api bool
	for _, p := range deps {
		if p == "go.opentelemetry.io/otel/trace" {
			api = true
		}
		for _, banned := range []string{
			"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters", "go.opentelemetry.io/contrib",
			"github.com/prometheus/", "go.opentelemetry.io/proto", "google.golang.org/grpc",
		} {
			if strings.HasPrefix(p, banned) {
				t.Errorf("a core package depends on %s", p)
			}
		}
	}
	if !api {
		t.Errorf("the core packages do not import go.opentelemetry.io/otel/trace: is this test listing the right packages? deps:\n%s", out)
	}
}
