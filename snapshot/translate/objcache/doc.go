// Package objcache keeps a value computed from an input object for as long
// as the object lives. A model.Object is immutable once a source made it,
// and a changed object is a new one, so what a translation stage computes
// from one object alone (istiod's validation verdict, its encoded MCP
// resource) can be kept by the object's identity; the garbage collector's
// taking the object drops the value. Safe for concurrent use.
package objcache
