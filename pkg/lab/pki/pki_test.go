package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/keyutil"
)

func TestIssueVerifiesAgainstCA(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	now := time.Now()

	tests := []struct {
		name      string
		req       Request
		usage     x509.ExtKeyUsage
		dnsName   string
		verifyAt  time.Time
		wantValid bool
	}{
		{
			name:      "serving certificate with SANs",
			req:       Request{CommonName: "kube-apiserver", DNSNames: []string{"localhost", "kubernetes.default.svc"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true},
			usage:     x509.ExtKeyUsageServerAuth,
			dnsName:   "kubernetes.default.svc",
			verifyAt:  now,
			wantValid: true,
		},
		{
			name:      "client certificate with groups",
			req:       Request{CommonName: "alice", Organizations: []string{"devs", "system:masters"}, Client: true},
			usage:     x509.ExtKeyUsageClientAuth,
			verifyAt:  now,
			wantValid: true,
		},
		{
			name:      "expired client certificate",
			req:       Request{CommonName: "old", Client: true, NotAfter: now.Add(-time.Hour)},
			usage:     x509.ExtKeyUsageClientAuth,
			verifyAt:  now,
			wantValid: false,
		},
		{
			name:      "client certificate is not a serving certificate",
			req:       Request{CommonName: "bob", Client: true},
			usage:     x509.ExtKeyUsageServerAuth,
			verifyAt:  now,
			wantValid: false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ca.Issue(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if p.Cert.Subject.CommonName != tc.req.CommonName || !slices.Equal(p.Cert.Subject.Organization, tc.req.Organizations) {
				t.Errorf("subject = %v, want CN=%s O=%v", p.Cert.Subject, tc.req.CommonName, tc.req.Organizations)
			}
			if _, err := keyutil.ParsePrivateKeyPEM(p.KeyPEM); err != nil {
				t.Errorf("key PEM does not parse: %v", err)
			}
			_, err = p.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tc.usage}, DNSName: tc.dnsName, CurrentTime: tc.verifyAt})
			if (err == nil) != tc.wantValid {
				t.Errorf("Verify error = %v, want valid=%v", err, tc.wantValid)
			}
		})
	}
}

func TestIssueRejectsBadRequests(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for name, req := range map[string]Request{
		"empty common name": {Client: true},
		"no usage":          {CommonName: "x"},
		"inverted validity": {CommonName: "x", Client: true, NotBefore: now, NotAfter: now.Add(-time.Minute)},
	} {
		if _, err := ca.Issue(req); err == nil {
			t.Errorf("%s: Issue succeeded", name)
		}
	}
}

func TestCAAndServiceAccountKeyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("round-trip")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(dir, "ca", ca.CertPEM(), keyPEM); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", st.Mode().Perm())
	}
	loaded, err := LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("loaded CA certificate differs from the written one")
	}
	p, err := loaded.Issue(Request{CommonName: "after-load", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("certificate signed by the loaded CA does not verify: %v", err)
	}

	if _, err := LoadCA(filepath.Join(dir, "nope.crt"), filepath.Join(dir, "ca.key")); err == nil || !strings.Contains(err.Error(), "CA certificate") {
		t.Errorf("LoadCA with a missing file: error = %v", err)
	}

	sa, err := NewServiceAccountKey()
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := keyutil.ParsePublicKeysPEM(sa.PublicPEM)
	if err != nil || len(pubs) != 1 {
		t.Fatalf("service-account public key: %v (%d keys)", err, len(pubs))
	}
	if _, err := keyutil.ParsePrivateKeyPEM(sa.PrivatePEM); err != nil {
		t.Fatalf("service-account private key: %v", err)
	}
}
