// Package webtest drives the hosted web inspector (package web) in headless Chromium against
// the real stack started in-process: the api (httpapi with an inspector Service and browser
// JWTs), a worker Runtime, PostgreSQL and Redis from TEST_DATABASE_URL and TEST_REDIS_URL,
// and real MCP servers (server-everything, and go-sdk servers built in the tests).
//
// The tests need Debian's chromium at /usr/bin/chromium (deploy/local/test-services.sh
// installs it); without it they fail, never skip. Screenshots are written to
// test-artifacts/web/ at the repository root.
package webtest
