package snapshot

import "strings"

// Severity of a Diagnostic.
type Severity string

const (
	SeverityError   Severity = "error"   // the object was rejected
	SeverityWarning Severity = "warning" // the object was used, but part of it was not
)

// Diagnostic is a problem with one input object or file. It is the one type
// for such problems from the source that decodes a file to the snapshot
// that /debug/tenantz shows: sources, the model and every builder report
// with it, and the snapshot keeps it so operators can see why an object is
// missing or partly applied.
type Diagnostic struct {
	Severity  Severity `json:"severity"`
	Object    string   `json:"object,omitempty"`    // "Kind namespace/name"; "" when unknown (an unparseable document)
	Namespace string   `json:"namespace,omitempty"` // routes the problem to its tenant; "" when unknown
	Origin    string   `json:"origin,omitempty"`    // "file:line", a file, or "k8s"
	Message   string   `json:"message"`
}

func (d Diagnostic) String() string {
	var b strings.Builder
	if d.Origin != "" {
		b.WriteString(d.Origin)
		b.WriteString(": ")
	}
	if d.Object != "" {
		b.WriteString(d.Object)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Error lets a Diagnostic be returned where an error is expected.
func (d Diagnostic) Error() string { return d.String() }

// Warning reports whether the object was used in part.
func (d Diagnostic) Warning() bool { return d.Severity == SeverityWarning }
