# An allocation-heavy Perl program: a hash of 300,000 entries, sorted,
# joined, split and digested. Output is allocator-independent.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);

my $seed = 12345;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed; }

my %h;
for my $i (0 .. 299_999) {
    my $k = sprintf("k%08x-%d", rnd(), $i);
    $h{$k} = [ $i, "v" x (1 + $i % 40), { n => $i % 97 } ];
}
my @keys = sort keys %h;
print "keys ", scalar(@keys), " ", md5_hex(join(",", @keys[0 .. 999])), "\n";
my @by = sort { $h{$a}[2]{n} <=> $h{$b}[2]{n} or $a cmp $b } @keys;
print "by ", md5_hex(join(",", @by[0 .. 999])), "\n";
my $text = join("\n", map { "$_=" . $h{$_}[1] } @by);
my @lines = split /\n/, $text;
print "text ", length($text), " ", scalar(@lines), " ", md5_hex($text), "\n";
delete $h{$_} for @keys[0 .. 149_999];
print "left ", scalar(keys %h), "\n";
