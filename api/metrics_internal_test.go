package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/triggerd/triggerd/config"
)

// BenchmarkRequestCounting measures what counting a request adds: the
// same request (GET /healthz) routed with and without UseMetrics.
func BenchmarkRequestCounting(b *testing.B) {
	for _, counted := range []bool{false, true} {
		name := "uncounted"
		if counted {
			name = "counted"
		}
		b.Run(name, func(b *testing.B) {
			s := New(&config.Config{}, nil, nil, nil, nil)
			if counted {
				s.UseMetrics(prometheus.NewRegistry())
			}
			r := httptest.NewRequest(http.MethodGet, "/healthz", nil)
			b.ReportAllocs()
			for b.Loop() {
				s.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}
