package gateway

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
)

func clusterMode(cfg config.Gateway, addr string, started time.Time, log *slog.Logger, m *metrics.Metrics) (broker.Broker, presence.Store, func() error, error) {
	return nil, nil, nil, fmt.Errorf("gateway: cluster mode pending")
}
