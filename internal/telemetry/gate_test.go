package telemetry_test

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/esox-go/esox/internal/telemetry"
)

// gateChild names, in a child process of TestGateFollowsGlobalProviders,
// the global provider it installs: "tracer" or "meter". Installing a global
// provider cannot be undone, hence the child.
const gateChild = "ESOX_TEST_GATE_CHILD"

// TestGateFollowsGlobalProviders: a gate of a component configured with no
// provider is off while the application has installed no global one, and
// on from the moment it installs either, though the gate was made before;
// a gate given a provider of its own is never off. A tracer's gate follows
// the global tracer provider only. Installing the defaults saved before
// again does not turn it off: they forward to the provider installed.
func TestGateFollowsGlobalProviders(t *testing.T) {
	if which := os.Getenv(gateChild); which != "" {
		gateChildRun(t, which)
		return
	}
	for _, which := range []string{"tracer", "meter"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGateFollowsGlobalProviders$", "-test.v")
		cmd.Env = append(os.Environ(), gateChild+"="+which)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("child installing a global %s: %v\n%s", which, err, out)
		}
	}
}

func gateChildRun(t *testing.T, which string) {
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider()
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	global, tracing := telemetry.NewGate(nil, nil), telemetry.NewTracerGate(nil)
	if !global.Off() || !tracing.Off() {
		t.Fatal("a gate on the global providers is on before any provider was installed")
	}
	if telemetry.NewGate(tp, nil).Off() || telemetry.NewGate(nil, mp).Off() || telemetry.NewTracerGate(tp).Off() || (telemetry.Gate{}).Off() {
		t.Error("a gate given a provider of its own is off")
	}
	savedTP, savedMP := otel.GetTracerProvider(), otel.GetMeterProvider()
	switch which {
	case "tracer":
		otel.SetTracerProvider(tp)
	case "meter":
		otel.SetMeterProvider(mp)
	default:
		t.Fatalf("%s=%q", gateChild, which)
	}
	check := func(when string) {
		t.Helper()
		if global.Off() {
			t.Errorf("%s: the gate is off", when)
		}
		// A component that only traces has nothing to record with a meter.
		if tracing.Off() != (which == "meter") {
			t.Errorf("%s: a tracer's gate is off: %v", when, tracing.Off())
		}
	}
	check("after a global " + which + " provider was installed")
	// The default saved before the install forwards to it from then on.
	otel.SetTracerProvider(savedTP)
	otel.SetMeterProvider(savedMP)
	check("after the saved defaults were installed again")
}
