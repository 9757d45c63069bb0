package api

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// UseMetrics counts the API's requests on reg, in
// triggerd_http_requests_total by route (the path template, such as
// /v1/api/{project}/event-triggers/queue; "unmatched" for requests no
// route takes) and status code.
func (s *Server) UseMetrics(reg prometheus.Registerer) {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "triggerd_http_requests_total",
		Help: "API requests answered, by route template and status code.",
	}, []string{"route", "code"})
	reg.MustRegister(s.requests)
	s.router.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if sw, ok := w.(*statusWriter); ok {
				if t, err := mux.CurrentRoute(r).GetPathTemplate(); err == nil {
					sw.route = t
				}
			}
			next.ServeHTTP(w, r)
		})
	})
}

// serveCounted routes r and counts its answer in s.requests.
func (s *Server) serveCounted(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK, route: "unmatched"}
	s.router.ServeHTTP(sw, r)
	s.requests.WithLabelValues(sw.route, strconv.Itoa(sw.code)).Inc()
}

// statusWriter remembers the status code of an answer, and the route
// that the router's middleware (see UseMetrics) says took the request.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
	route string
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes of
// the live feed, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
