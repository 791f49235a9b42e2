package graph

import (
	"io"
	"math"

	"github.com/99designs/gqlgen/graphql"
)

// MarshalInt writes an Int. Values are int64 in Go so that counters and versions never wrap; the
// scalar is mapped to this pair in gqlgen.yml.
func MarshalInt(v int64) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		graphql.MarshalInt64(v).MarshalGQL(w)
	})
}

// UnmarshalInt reads an Int argument, from a literal or a variable. GraphQL's Int is 32-bit: a
// value outside that range is a BAD_USER_INPUT error (codedError), not a number the resolvers
// would have to bound one by one.
func UnmarshalInt(v any) (int64, error) {
	n, err := graphql.UnmarshalInt64(v)
	if err != nil {
		return 0, errBadInput("Int must be a whole number between %d and %d", math.MinInt32, math.MaxInt32)
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, errBadInput("Int must be between %d and %d, not %d", math.MinInt32, math.MaxInt32, n)
	}
	return n, nil
}
