package gateway

import (
	"errors"
	"net/http"

	"github.com/wsgw/wsgw/pkg/admission"
)

// admit reserves a socket for r under MAX_CONNECTIONS and MAX_CONNECTIONS_PER_IP
// (docs/PROTOCOL.md "Admission"), or answers 503 with Retry-After: 1, counts the refusal and
// returns nil. The caller releases the ticket when the upgrade fails or the connection ends.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) *admission.Ticket {
	t, err := s.adm.Reserve(r)
	if err == nil {
		return t
	}
	reason := "admission"
	var ref *admission.Refused
	if errors.As(err, &ref) {
		reason = ref.Reason
	}
	s.m.Rejected.WithLabelValues(reason).Inc()
	admission.Refuse(w, err)
	return nil
}

// Full reports whether the gateway holds MAX_CONNECTIONS sockets; /readyz answers 503 `full`
// meanwhile, so the load balancer sends new clients elsewhere.
func (s *Server) Full() bool { return s.adm.Full() }
