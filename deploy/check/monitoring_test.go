package check

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// rulesFile is Prometheus's rule file format (the fields deploy/prometheus/alerts.yml uses).
type rulesFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `json:"alert,omitempty"`
			Record      string            `json:"record,omitempty"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// promConfig is the part of deploy/prometheus/prometheus.yml the checks read.
type promConfig struct {
	Global        map[string]string `json:"global"`
	RuleFiles     []string          `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName      string `json:"job_name"`
		DNSSDConfigs []struct {
			Names           []string `json:"names"`
			Type            string   `json:"type"`
			Port            int      `json:"port"`
			RefreshInterval string   `json:"refresh_interval"`
		} `json:"dns_sd_configs,omitempty"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs,omitempty"`
	} `json:"scrape_configs"`
}

// checkQuery parses one PromQL expression and checks every metric it selects exists (in the
// programs' registry or among the foreign exporters' names) and every job it names is scraped.
func checkQuery(t *testing.T, where, expr string, names map[string]bool, jobs []string) {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return
	}
	selectors := 0
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		selectors++
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			switch m.Name {
			case "__name__":
				name = m.Value
			case "job":
				if !slices.Contains(jobs, m.Value) {
					t.Errorf("%s: %q selects job %q; prometheus.yml scrapes %v", where, expr, m.Value, jobs)
				}
			}
		}
		if !names[name] && !foreign[name] {
			t.Errorf("%s: %q uses metric %q, which no program exports (pkg/metrics) and is not a known foreign metric", where, expr, name)
		}
		return nil
	})
	if selectors == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
}

func scrapeJobs(t *testing.T) []string {
	var pc promConfig
	readYAML(t, "deploy/prometheus/prometheus.yml", &pc)
	var jobs []string
	for _, sc := range pc.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	return jobs
}

// TestAlertRules parses every rule of deploy/prometheus/alerts.yml and checks it is complete
// and refers to metrics that exist, and that the required alerts are there.
func TestAlertRules(t *testing.T) {
	var rf rulesFile
	readYAML(t, "deploy/prometheus/alerts.yml", &rf)
	names, jobs := metricNames(t), scrapeJobs(t)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := "alerts.yml " + g.Name + "/" + r.Alert + r.Record
			checkQuery(t, where, r.Expr, names, jobs)
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: want a severity label and a summary annotation", where)
			}
		}
	}
	for _, want := range []string{"GatewayDown", "GatewayTicksStale", "PresenceWritesFailing", "SlowConsumersKicked", "FewerThanTwoReadyReplicas"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml: no alert %s (have %v)", want, alerts)
		}
	}
}

// dashboard is the part of a Grafana dashboard the checks read; rows may nest panels.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// TestDashboard parses every query of the Grafana dashboard with the PromQL parser, checks its
// metrics exist, and that every panel uses the provisioned datasource.
func TestDashboard(t *testing.T) {
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string            `json:"name"`
			UID       string            `json:"uid"`
			Type      string            `json:"type"`
			Access    string            `json:"access"`
			URL       string            `json:"url"`
			IsDefault bool              `json:"isDefault"`
			Editable  bool              `json:"editable"`
			JSONData  map[string]string `json:"jsonData"`
		} `json:"datasources"`
	}
	readYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("datasource provisioning: %s, want one prometheus datasource at http://prometheus:9090", jsonString(ds))
	}
	uid := ds.Datasources[0].UID

	var d dashboard
	if err := json.Unmarshal(readRepoFile(t, "deploy/grafana/dashboards/wsgw.json"), &d); err != nil {
		t.Fatalf("wsgw.json: %v", err)
	}
	names, jobs := metricNames(t), scrapeJobs(t)
	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != uid {
				t.Errorf("panel %q: datasource %s, want uid %q (provisioned)", p.Title, jsonString(p.Datasource), uid)
			}
			for _, tg := range p.Targets {
				queries++
				checkQuery(t, "wsgw.json panel "+p.Title, tg.Expr, names, jobs)
			}
		}
	}
	walk(d.Panels)
	if queries == 0 {
		t.Fatal("wsgw.json: no queries")
	}
}

// TestPrometheusConfig checks the scrape configuration against the compose file: rule files
// mounted where Prometheus looks, and each program scraped on its ADMIN_ADDR port.
func TestPrometheusConfig(t *testing.T) {
	var pc promConfig
	readYAML(t, "deploy/prometheus/prometheus.yml", &pc)
	c := loadComposeFile(t)
	prom := c.Services["prometheus"]
	mounted := map[string]string{}
	for _, v := range prom.Volumes {
		if m := regexp.MustCompile(`^\./(\S+?):(\S+?)(:ro)?$`).FindStringSubmatch(v); m != nil {
			mounted[m[2]] = m[1]
		}
	}
	if mounted["/etc/prometheus/prometheus.yml"] != "deploy/prometheus/prometheus.yml" {
		t.Errorf("compose prometheus: volumes %v, want deploy/prometheus/prometheus.yml at /etc/prometheus/prometheus.yml", prom.Volumes)
	}
	for _, rf := range pc.RuleFiles {
		if mounted[rf] == "" {
			t.Errorf("prometheus.yml: rule file %s is not mounted by compose (volumes %v)", rf, prom.Volumes)
		}
	}
	if len(pc.RuleFiles) == 0 {
		t.Error("prometheus.yml: no rule_files: the alerts are never loaded")
	}
	for _, sc := range pc.ScrapeConfigs {
		for _, sd := range sc.DNSSDConfigs {
			for _, name := range sd.Names {
				svc, ok := c.Services[name]
				if !ok {
					t.Errorf("prometheus.yml job %s: no compose service %q", sc.JobName, name)
					continue
				}
				admin := svc.Environment["ADMIN_ADDR"]
				if want := ":" + strconv.Itoa(sd.Port); admin == "" || !strings.HasSuffix(admin, want) {
					t.Errorf("prometheus.yml job %s scrapes %s on port %d; compose's ADMIN_ADDR is %q", sc.JobName, name, sd.Port, admin)
				}
				if !slices.Contains(svc.Expose, strconv.Itoa(sd.Port)) {
					t.Errorf("prometheus.yml job %s scrapes %s:%d; compose exposes %v", sc.JobName, name, sd.Port, svc.Expose)
				}
			}
		}
	}
}
