// Package v20170312 carries just the names flannel's tencentvpc backend uses.
// Every call fails: the real SDK is not served by the Go module proxy, so the
// flanneld built here has no TencentCloud VPC backend (see ../go.mod).
package v20170312

import "errors"

var errUnserved = errors.New("TencentCloud VPC backend not built: its SDK module is not served by the Go module proxy (hakube srcbuild)")

// Client stands for the SDK's VPC API client.
type Client struct{}

// NewClientWithSecretId fails: see errUnserved.
func NewClientWithSecretId(secretID, secretKey, region string) (*Client, error) {
	return nil, errUnserved
}

// Filter is a DescribeRouteTables filter.
type Filter struct {
	Name   *string
	Values []*string
}

// Route is one VPC route.
type Route struct {
	DestinationCidrBlock *string
	GatewayType          *string
	GatewayId            *string
	RouteId              *uint64
	RouteType            *string
	Enabled              *bool
}

// RouteTable is a VPC route table.
type RouteTable struct {
	RouteTableId *string
	RouteSet     []*Route
}

// DescribeRouteTablesRequest selects route tables.
type DescribeRouteTablesRequest struct{ Filters []*Filter }

// DescribeRouteTablesResponse lists route tables.
type DescribeRouteTablesResponse struct {
	Response *struct{ RouteTableSet []*RouteTable }
}

// DeleteRoutesRequest deletes routes of a table.
type DeleteRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

// DeleteRoutesResponse answers DeleteRoutes.
type DeleteRoutesResponse struct{}

// CreateRoutesRequest adds routes to a table.
type CreateRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

// CreateRoutesResponse answers CreateRoutes.
type CreateRoutesResponse struct{}

// NewDescribeRouteTablesRequest returns an empty request.
func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest {
	return &DescribeRouteTablesRequest{}
}

// NewDeleteRoutesRequest returns an empty request.
func NewDeleteRoutesRequest() *DeleteRoutesRequest { return &DeleteRoutesRequest{} }

// NewCreateRoutesRequest returns an empty request.
func NewCreateRoutesRequest() *CreateRoutesRequest { return &CreateRoutesRequest{} }

// DescribeRouteTables fails: see errUnserved.
func (c *Client) DescribeRouteTables(*DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
	return nil, errUnserved
}

// DeleteRoutes fails: see errUnserved.
func (c *Client) DeleteRoutes(*DeleteRoutesRequest) (*DeleteRoutesResponse, error) {
	return nil, errUnserved
}

// CreateRoutes fails: see errUnserved.
func (c *Client) CreateRoutes(*CreateRoutesRequest) (*CreateRoutesResponse, error) {
	return nil, errUnserved
}
