package gateway

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/auth"
)

// TestBrowserToken drives index.html in headless Chromium against a gateway that requires a
// token: the token field appears, the page connects with the token in the wsgw.bearer
// subprotocol, refreshes in-band, and says clearly when the token expired (4001).
func TestBrowserToken(t *testing.T) {
	chromium := testkit.Need(t, "chromium", "chromium-browser")
	g := startAuthGateway(t, auth.Options{Secret: testSecret}, Options{})
	br := startBrowser(t, chromium)

	br.run("open the page", chromedp.Navigate(g.http.URL), chromedp.WaitVisible(chromedp.ID("token")))
	br.wait("the name field hidden (the token names the user)", `document.getElementById("namerow").hidden`)
	br.run("connect without a token", chromedp.Click(chromedp.ID("connect")))
	br.wait("the page to ask for a token", `document.getElementById("status").textContent.includes("requires a token")`)

	br.run("connect with a token",
		chromedp.SetValue(chromedp.ID("token"), token(t, "ana", 2*time.Second)),
		chromedp.Click(chromedp.ID("connect")),
	)
	br.wait("the welcome", `document.getElementById("status").textContent === "connected to gw-test as ana" &&
		document.getElementById("gateway").textContent.includes("token expires")`)
	br.run("ask for F(10)", chromedp.SetValue(chromedp.ID("n"), "10"), chromedp.Click(chromedp.ID("ask")))
	br.wait("F(10) = 55", `document.getElementById("answers").textContent.includes("F(10) = 55")`)
	if u := getUsers(t, g.http.URL); !browserHasUser(u, "ana", "gw-test") {
		t.Fatalf("/users = %+v, want ana", u)
	}

	br.run("refresh with a longer token",
		chromedp.SetValue(chromedp.ID("token"), token(t, "ana", 4*time.Second)),
		chromedp.Click(chromedp.ID("refresh")),
	)
	br.wait("the refresh", `document.getElementById("events").textContent.includes("token refreshed")`)
	br.wait("the 4001 at the refreshed expiry", `document.getElementById("status").textContent.includes("token expired (4001)")`)
	browserScreenshot(br.ctx, t, "browser-token-expired.png")
	testkit.Eventually(t, browserWait, "the gateway to drop the connection", func() bool { return g.srv.Connections() == 0 })
	time.Sleep(1500 * time.Millisecond) // longer than the shortest backoff: no reconnect with a dead token
	if n := g.srv.Connections(); n != 0 {
		t.Fatalf("the page reconnected with an expired token: %d connections", n)
	}
	br.checkExceptions()
}
