// Package plot draws cumulative distributions as inline SVG for the pages
// xdshard serves and writes: the bench report's latency plots and the
// operator page's push stages. Each plot carries a text title for screen
// readers; the pages put the figures it draws in a table beside it.
package plot
