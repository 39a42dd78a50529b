"""`ipvsctl import`: keepalived.conf or ipvsadm-save output → Service and EndpointSlice manifests."""
