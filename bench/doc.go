// Package bench runs xdshard and a plain go-control-plane server side by
// side on the same synthetic fleet, with the same simulated proxies and
// the same churn, and reports push latency, CPU and memory for each, so
// the comparison holds on a noisy machine. `xdshard bench` is its command.
package bench
