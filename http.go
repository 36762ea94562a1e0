package esox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeoutDefault is HTTPServer's shutdown timeout when it is given
// zero.
const ShutdownTimeoutDefault = 10 * time.Second

// HTTPServer returns a front Component (see Component.Front) named "http"
// that serves srv on ln: from the start of App.Run, before the migrations,
// so that a readiness handler can answer "not ready" until App.Ready is
// closed. With a nil ln it listens on srv.Addr when Run starts it.
//
// When the App stops, the component stops first: srv.Shutdown closes the
// listener and waits, up to shutdownTimeout (ShutdownTimeoutDefault when
// zero), for the requests in flight, which can still append and wait for
// their read models (App.WaitFor) because the runner and the forwarder stop
// only after it. Requests still running then are cut off (srv.Close) and
// the component's Run returns an error saying so, which the App logs. srv's
// handler may be set after HTTPServer and until App.Run starts.
//
// A listener that fails before the App stops (srv.Serve returning) stops
// the App with its error. Set the returned Component's Migrate for tables
// the handlers need (e.g. idempotency keys).
func HTTPServer(srv *http.Server, ln net.Listener, shutdownTimeout time.Duration) Component {
	if shutdownTimeout <= 0 {
		shutdownTimeout = ShutdownTimeoutDefault
	}
	return Component{
		Name:  "http",
		Front: true,
		Run: func(ctx context.Context) error {
			served := make(chan error, 1)
			go func() {
				if ln == nil {
					served <- srv.ListenAndServe()
					return
				}
				served <- srv.Serve(ln)
			}()
			select {
			case err := <-served:
				return fmt.Errorf("serve: %w", err)
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
			defer cancel()
			err := srv.Shutdown(sctx)
			if err != nil {
				_ = srv.Close()
				err = fmt.Errorf("requests in flight did not finish within %s; cut off: %w", shutdownTimeout, err)
			}
			if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
				err = serr
			}
			return err
		},
	}
}
