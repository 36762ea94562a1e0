package main

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// TestTwoInstances runs two processes on one schema: a command served by one
// is readable at once from the other, and when one is killed (SIGKILL, no
// goodbye), the survivor takes over whatever projection and forwarder work
// the dead one led: new orders still reach the read models, the broker and
// the shipping consumer, with one shipment per order.
func TestTwoInstances(t *testing.T) {
	a := startService(t, "gochannel")
	b := startAgain(t, a, "gochannel")

	c := a.place("ann-" + uuid.NewString()[:8])
	if o := b.getOrder(c.ID); o.Version != 1 || o.Status != "placed" {
		t.Fatalf("instance b reads %+v right after instance a placed it", o)
	}
	want(t, "pay on b", b.do("POST", "/orders/"+c.ID+"/pay", `{"amount_cents":3000}`), http.StatusOK, "")
	if o := a.getOrder(c.ID); o.Status != "paid" {
		t.Fatalf("instance a reads %+v right after instance b paid it", o)
	}

	a.kill()
	id := lifecycle(t, b, "ben-"+uuid.NewString()[:8])
	waitShipment(t, b, id)
	waitShipmentOf(t, b, c.ID, 3000) // exactly one, whoever forwarded it
	b.stop()
}
