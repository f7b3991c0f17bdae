//! kennel control plane: API server, store, controllers
